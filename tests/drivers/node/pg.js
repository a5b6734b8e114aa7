// node-postgres (`pg`, pinned by package-lock.json beside this file) against a running ddb
// node, with the driver's defaults.
//
//     (cd tests/drivers/node && npm ci)
//     node tests/drivers/node/pg.js SQL_PORT [numeric]
//
// A Pool acquired and released many times from concurrent callers, parameterised queries,
// BEGIN/COMMIT/ROLLBACK, an error inside a transaction then ROLLBACK, and the types pg parses
// (int8 as a string, float8, text, bool, null). Every check compares a result with what it must
// be; the first that differs (or a driver error) exits non-zero. With `numeric`, it checks the
// NUMERIC type instead (which pg returns as a string, exactly), which ddb does not have yet.
"use strict";
const assert = require("node:assert/strict");
const { Pool, Client } = require("pg");

const port = Number(process.argv[2]);
const config = { host: "127.0.0.1", port, user: "tester", database: "ddb" };

async function main() {
  const setup = new Client(config);
  await setup.connect();
  const v = await setup.query("SELECT version() AS v");
  assert.match(v.rows[0].v, /^ddb/, "version() says ddb");
  await setup.query("DROP TABLE IF EXISTS nt");
  await setup.query("CREATE TABLE nt (id BIGINT PRIMARY KEY, name TEXT, score DOUBLE PRECISION, ok BOOLEAN)");
  await setup.end();

  // Session settings pg sends in the startup message, as applications configure them.
  const pool = new Pool({ ...config, max: 4, application_name: "ddb-pg-test", statement_timeout: 5000 });
  let errors = 0;
  pool.on("error", () => errors++);

  // 200 acquire/release cycles from 8 concurrent workers, each writing then reading its rows
  // with parameterised queries (unnamed prepared statements in the extended protocol).
  const workers = [];
  for (let w = 0; w < 8; w++) {
    workers.push((async () => {
      for (let i = 0; i < 25; i++) {
        const id = w * 1000 + i;
        const c = await pool.connect();
        try {
          const ins = await c.query("INSERT INTO nt (id, name, score, ok) VALUES ($1, $2, $3, $4)",
            [id, `w${w}-${i}`, id / 4, i % 2 === 0]);
          assert.equal(ins.rowCount, 1);
          assert.equal(ins.command, "INSERT");
          const sel = await c.query("SELECT name, ok FROM nt WHERE id = $1", [id]);
          assert.deepEqual(sel.rows, [{ name: `w${w}-${i}`, ok: i % 2 === 0 }]);
        } finally {
          c.release();
        }
      }
    })());
  }
  await Promise.all(workers);
  const settings = await pool.query("SHOW application_name");
  assert.deepEqual(settings.rows, [{ application_name: "ddb-pg-test" }]);
  assert.equal((await pool.query("SHOW statement_timeout")).rows[0].statement_timeout, "5s");
  const total = await pool.query("SELECT count(*) AS n FROM nt");
  // count(*) is int8: pg returns int8 as a string (it may not fit a JS number).
  assert.equal(total.rows[0].n, "200");

  // A named prepared statement: pg parses it once per connection and reuses it by name.
  for (let i = 0; i < 8; i++) {
    const r = await pool.query({ name: "by-id", text: "SELECT id, score FROM nt WHERE id = $1", values: [i] });
    assert.deepEqual(r.rows, [{ id: String(i), score: i / 4 }]);
  }

  // Types: int8 as a string, float8 as a number, text, bool and null, through a parameter too.
  const t = await pool.query(
    "SELECT CAST(9007199254740993 AS BIGINT) AS big, CAST(2.5 AS DOUBLE PRECISION) AS f, 'héllo' AS s, true AS b, NULL AS n, $1::text AS p",
    ["param"]);
  assert.deepEqual(t.rows[0], { big: "9007199254740993", f: 2.5, s: "héllo", b: true, n: null, p: "param" });
  await pool.query("INSERT INTO nt (id, name, score, ok) VALUES ($1, $2, $3, $4)", [9007199254740993n.toString(), null, null, null]);
  const nulls = await pool.query("SELECT id, name, score, ok FROM nt WHERE id = $1", ["9007199254740993"]);
  assert.deepEqual(nulls.rows, [{ id: "9007199254740993", name: null, score: null, ok: null }]);

  // A transaction committed, one rolled back, and one where a statement fails: the transaction
  // is aborted (25P02) until ROLLBACK, and the connection is usable after it.
  const c = await pool.connect();
  try {
    await c.query("BEGIN");
    await c.query("INSERT INTO nt (id, name) VALUES ($1, $2)", [50000, "committed"]);
    await c.query("COMMIT");
    await c.query("BEGIN");
    await c.query("INSERT INTO nt (id, name) VALUES ($1, $2)", [50001, "rolled back"]);
    const inside = await c.query("SELECT count(*) AS n FROM nt WHERE id = 50001");
    assert.equal(inside.rows[0].n, "1", "a transaction sees its own write");
    await c.query("ROLLBACK");
    await c.query("BEGIN");
    await c.query("INSERT INTO nt (id, name) VALUES ($1, $2)", [50002, "lost with the error"]);
    await assert.rejects(c.query("INSERT INTO nt (id) VALUES ($1)", [0]), (e) => {
      assert.equal(e.code, "23505", `duplicate key: ${e.message}`);
      return true;
    });
    await assert.rejects(c.query("SELECT 1"), (e) => {
      assert.equal(e.code, "25P02", `aborted transaction: ${e.message}`);
      return true;
    });
    await c.query("ROLLBACK");
    const after = await c.query("SELECT id FROM nt WHERE id >= 50000 AND id < 60000 ORDER BY id");
    assert.deepEqual(after.rows, [{ id: "50000" }]);
  } finally {
    c.release();
  }

  // A syntax error outside a transaction is an error with its SQLSTATE, not a broken pool.
  await assert.rejects(pool.query("SELEKT 1"), (e) => e.code === "42601");
  const one = await pool.query("SELECT 1 AS one");
  assert.equal(one.rows[0].one, 1);

  await pool.end();
  assert.equal(errors, 0, "idle pool clients saw errors");
  console.log("node-postgres ok");
}

async function numeric() {
  const c = new Client(config);
  await c.connect();
  await c.query("DROP TABLE IF EXISTS nnum");
  await c.query("CREATE TABLE nnum (id INT PRIMARY KEY, amount NUMERIC(12, 3))");
  await c.query("INSERT INTO nnum VALUES ($1, $2), ($3, $4), ($5, $6)", [1, "12345.678", 2, "0.001", 3, null]);
  const r = await c.query("SELECT amount FROM nnum ORDER BY id");
  assert.deepEqual(r.rows.map((x) => x.amount), ["12345.678", "0.001", null]);
  const sum = await c.query("SELECT sum(amount) AS s, CAST(0.1 AS NUMERIC) + CAST(0.2 AS NUMERIC) AS exact FROM nnum");
  assert.deepEqual(sum.rows[0], { s: "12345.679", exact: "0.3" });
  await c.end();
  console.log("node-postgres numeric ok");
}

(process.argv[3] === "numeric" ? numeric() : main()).catch((e) => {
  console.error(e);
  process.exit(1);
});
