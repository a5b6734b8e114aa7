// pgjdbc (Debian's libpostgresql-jdbc-java) against a running ddb node, with the driver's
// default URL and settings, as an application or a pool uses it.
//
//     javac -d target/drivers-jdbc tests/drivers/jdbc/DdbJdbc.java
//     java -cp target/drivers-jdbc:/usr/share/java/postgresql.jar DdbJdbc SQL_PORT MODE
//
// MODE is `basics` (connect, the metadata a pool reads at connect, prepared statements past
// pgjdbc's server-prepare threshold of 5, batches, transactions, setFetchSize), `savepoints`,
// `generated-keys` or `catalog` (the DatabaseMetaData lookups of schema tools and ORMs). Every check compares a result with what it must be; the first that
// differs (or any SQLException) exits non-zero with what was expected and what came back.

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.sql.Statement;
import java.util.Objects;

public class DdbJdbc {
    static String url;

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    static void eq(Object expected, Object actual, String what) {
        if (!Objects.equals(expected, actual)) {
            throw new AssertionError(what + ": expected " + expected + ", got " + actual);
        }
    }

    static Connection connect() throws SQLException {
        return DriverManager.getConnection(url, "tester", "");
    }

    static long count(Connection c, String table) throws SQLException {
        try (Statement s = c.createStatement();
                ResultSet rs = s.executeQuery("SELECT count(*) FROM " + table)) {
            check(rs.next(), "count(*) returned no row");
            return rs.getLong(1);
        }
    }

    static void recreate(Connection c, String table, String columns) throws SQLException {
        try (Statement s = c.createStatement()) {
            s.execute("DROP TABLE IF EXISTS " + table);
            s.execute("CREATE TABLE " + table + " (" + columns + ")");
        }
    }

    static void basics() throws SQLException {
        try (Connection c = connect()) {
            // What a pool (HikariCP) and an ORM (Hibernate) read when they take a connection.
            check(c.isValid(5), "isValid");
            DatabaseMetaData md = c.getMetaData();
            eq("PostgreSQL", md.getDatabaseProductName(), "product name (pgjdbc's constant)");
            String version = md.getDatabaseProductVersion();
            check(version != null && !version.isEmpty(), "product version is empty");
            eq(true, c.getAutoCommit(), "autocommit by default");
            int iso = c.getTransactionIsolation();
            check(
                    iso == Connection.TRANSACTION_SERIALIZABLE
                            || iso == Connection.TRANSACTION_READ_COMMITTED,
                    "transaction isolation " + iso);
            eq("public", c.getSchema(), "getSchema (current_schema())");
            eq("ddb", c.getCatalog(), "getCatalog (current_database())");
            try (Statement s = c.createStatement();
                    ResultSet rs = s.executeQuery("SELECT version()")) {
                check(rs.next(), "version() returned no row");
                String v = rs.getString(1);
                check(v.startsWith("ddb"), "version() must say ddb: " + v);
                System.out.println("jdbc version() " + v + "; product version " + version);
            }

            recreate(c, "jt", "id BIGINT PRIMARY KEY, name TEXT, score DOUBLE PRECISION, ok BOOLEAN");

            // One PreparedStatement executed 20 times: from the 5th, pgjdbc switches to a named
            // server-side statement and Describes it once (an INSERT must be NoData).
            try (PreparedStatement ins =
                    c.prepareStatement("INSERT INTO jt (id, name, score, ok) VALUES (?, ?, ?, ?)")) {
                for (int i = 0; i < 20; i++) {
                    ins.setLong(1, i);
                    ins.setString(2, "n" + i);
                    ins.setDouble(3, i * 1.5);
                    ins.setBoolean(4, i % 2 == 0);
                    eq(1, ins.executeUpdate(), "update count of INSERT #" + i);
                }
            }
            eq(20L, count(c, "jt"), "rows after 20 prepared INSERTs");
            try (PreparedStatement sel =
                    c.prepareStatement("SELECT name, score, ok FROM jt WHERE id = ?")) {
                for (int i = 0; i < 20; i++) {
                    sel.setLong(1, i);
                    try (ResultSet rs = sel.executeQuery()) {
                        check(rs.next(), "no row for id " + i);
                        eq("n" + i, rs.getString(1), "name of " + i);
                        eq(i * 1.5, rs.getDouble(2), "score of " + i);
                        eq(i % 2 == 0, rs.getBoolean(3), "ok of " + i);
                        check(!rs.next(), "two rows for id " + i);
                    }
                }
            }
            // A NULL parameter and a NULL result.
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO jt (id, name) VALUES (?, ?)")) {
                ins.setLong(1, 100);
                ins.setNull(2, java.sql.Types.VARCHAR);
                eq(1, ins.executeUpdate(), "insert with a NULL");
            }
            try (Statement s = c.createStatement();
                    ResultSet rs = s.executeQuery("SELECT name, score FROM jt WHERE id = 100")) {
                check(rs.next(), "no row 100");
                eq(null, rs.getString(1), "NULL text");
                rs.getDouble(2);
                check(rs.wasNull(), "NULL double");
            }

            // A batch: pgjdbc sends the rows as one pipeline of Bind/Execute.
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO jt (id, name) VALUES (?, ?)")) {
                for (int i = 0; i < 50; i++) {
                    ins.setLong(1, 1000 + i);
                    ins.setString(2, "b" + i);
                    ins.addBatch();
                }
                int[] counts = ins.executeBatch();
                eq(50, counts.length, "batch update counts");
                for (int n : counts) {
                    check(n == 1 || n == Statement.SUCCESS_NO_INFO, "batch update count " + n);
                }
            }
            eq(71L, count(c, "jt"), "rows after the batch");
            try (PreparedStatement upd = c.prepareStatement("UPDATE jt SET name = ? WHERE id >= ?")) {
                upd.setString(1, "batched");
                upd.setLong(2, 1000);
                eq(50, upd.executeUpdate(), "UPDATE count");
            }

            // Transactions: a rollback undoes, a commit keeps.
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                eq(1, s.executeUpdate("INSERT INTO jt (id, name) VALUES (200, 'rolled back')"), "insert 200");
                c.rollback();
                eq(71L, count(c, "jt"), "rows after rollback");
                eq(1, s.executeUpdate("INSERT INTO jt (id, name) VALUES (201, 'committed')"), "insert 201");
                eq(1, s.executeUpdate("DELETE FROM jt WHERE id = 0"), "delete 0");
                c.commit();
            }
            c.setAutoCommit(true);
            eq(71L, count(c, "jt"), "rows after commit");
            try (Connection other = connect();
                    Statement s = other.createStatement();
                    ResultSet rs = s.executeQuery("SELECT name FROM jt WHERE id = 201")) {
                check(rs.next(), "the committed row is not seen by another connection");
                eq("committed", rs.getString(1), "committed row");
            }

            // A duplicate key in a transaction: 23505, then the transaction is aborted (25P02)
            // until the rollback, after which the connection works.
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                try {
                    s.executeUpdate("INSERT INTO jt (id) VALUES (1)");
                    throw new AssertionError("a duplicate key was accepted");
                } catch (SQLException e) {
                    eq("23505", e.getSQLState(), "duplicate key SQLSTATE (" + e.getMessage() + ")");
                }
                try {
                    s.executeQuery("SELECT 1");
                    throw new AssertionError("a statement in an aborted transaction ran");
                } catch (SQLException e) {
                    eq("25P02", e.getSQLState(), "aborted transaction SQLSTATE (" + e.getMessage() + ")");
                }
                c.rollback();
            }
            c.setAutoCommit(true);
            eq(71L, count(c, "jt"), "rows after the failed transaction");

            // Timestamps through setTimestamp / setObject(LocalDateTime), read back both ways,
            // and compared in a WHERE with a parameter (past the server-prepare threshold too).
            recreate(c, "jts", "id INT PRIMARY KEY, at TIMESTAMP");
            java.sql.Timestamp ts = java.sql.Timestamp.valueOf("2024-02-29 13:45:06.123456");
            java.time.LocalDateTime ldt = java.time.LocalDateTime.of(1999, 12, 31, 23, 59, 59);
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO jts VALUES (?, ?)")) {
                for (int i = 0; i < 7; i++) {
                    ins.setInt(1, i);
                    if (i % 2 == 0) {
                        ins.setTimestamp(2, ts);
                    } else {
                        ins.setObject(2, ldt);
                    }
                    eq(1, ins.executeUpdate(), "insert timestamp " + i);
                }
            }
            try (PreparedStatement sel = c.prepareStatement("SELECT at FROM jts WHERE id = ?")) {
                for (int i = 0; i < 7; i++) {
                    sel.setInt(1, i);
                    try (ResultSet rs = sel.executeQuery()) {
                        check(rs.next(), "no timestamp row " + i);
                        if (i % 2 == 0) {
                            eq(ts, rs.getTimestamp(1), "getTimestamp " + i);
                        } else {
                            eq(ldt, rs.getObject(1, java.time.LocalDateTime.class), "LocalDateTime " + i);
                        }
                    }
                }
            }
            try (PreparedStatement sel = c.prepareStatement("SELECT count(*) FROM jts WHERE at = ?")) {
                for (int i = 0; i < 7; i++) {
                    sel.setTimestamp(1, ts);
                    try (ResultSet rs = sel.executeQuery()) {
                        check(rs.next(), "no count");
                        eq(4L, rs.getLong(1), "rows at the timestamp");
                    }
                }
            }

            // setFetchSize in a transaction: pgjdbc opens a portal and Executes it with a row
            // limit, fetching 7 rows at a time.
            c.setAutoCommit(false);
            try (PreparedStatement sel = c.prepareStatement("SELECT id FROM jt ORDER BY id")) {
                sel.setFetchSize(7);
                long n = 0;
                long sum = 0;
                long last = Long.MIN_VALUE;
                try (ResultSet rs = sel.executeQuery()) {
                    while (rs.next()) {
                        long id = rs.getLong(1);
                        check(id > last, "ORDER BY id out of order: " + id + " after " + last);
                        last = id;
                        n++;
                        sum += id;
                    }
                }
                eq(71L, n, "rows fetched 7 at a time");
                // ids 1..19, 100, 201, 1000..1049
                eq(190L + 100 + 201 + 50 * 1000 + 1225, sum, "sum of the fetched ids");
            }
            c.commit();
            c.setAutoCommit(true);
            System.out.println("jdbc basics ok");
        }
    }

    static void savepoints() throws SQLException {
        try (Connection c = connect()) {
            recreate(c, "js", "id INT PRIMARY KEY, v TEXT");
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                s.executeUpdate("INSERT INTO js VALUES (1, 'kept')");
                Savepoint sp = c.setSavepoint("before_two");
                s.executeUpdate("INSERT INTO js VALUES (2, 'undone')");
                c.rollback(sp);
                Savepoint sp2 = c.setSavepoint();
                s.executeUpdate("INSERT INTO js VALUES (3, 'released')");
                c.releaseSavepoint(sp2);
                c.commit();
            }
            c.setAutoCommit(true);
            try (Statement s = c.createStatement();
                    ResultSet rs = s.executeQuery("SELECT id FROM js ORDER BY id")) {
                check(rs.next(), "no row 1");
                eq(1, rs.getInt(1), "first row");
                check(rs.next(), "no row 3");
                eq(3, rs.getInt(1), "second row");
                check(!rs.next(), "the row after the savepoint was not rolled back");
            }
            System.out.println("jdbc savepoints ok");
        }
    }

    static void generatedKeys() throws SQLException {
        try (Connection c = connect()) {
            recreate(c, "jg", "id BIGSERIAL PRIMARY KEY, v TEXT");
            try (PreparedStatement ins =
                    c.prepareStatement("INSERT INTO jg (v) VALUES (?)", Statement.RETURN_GENERATED_KEYS)) {
                long previous = Long.MIN_VALUE;
                for (int i = 0; i < 7; i++) {
                    ins.setString(1, "g" + i);
                    eq(1, ins.executeUpdate(), "insert g" + i);
                    try (ResultSet keys = ins.getGeneratedKeys()) {
                        check(keys.next(), "no generated key for g" + i);
                        long id = keys.getLong("id");
                        check(id != previous, "the same key twice: " + id);
                        previous = id;
                    }
                }
            }
            eq(7L, count(c, "jg"), "rows with generated keys");
            System.out.println("jdbc generated keys ok");
        }
    }

    static void catalog() throws SQLException {
        try (Connection c = connect()) {
            recreate(c, "jm", "id INT PRIMARY KEY, label VARCHAR(20) NOT NULL, note TEXT");
            DatabaseMetaData md = c.getMetaData();
            try (ResultSet rs = md.getTables(null, "public", "jm", new String[] {"TABLE"})) {
                check(rs.next(), "getTables found no jm");
                eq("jm", rs.getString("TABLE_NAME"), "getTables name");
                check(!rs.next(), "getTables found jm twice");
            }
            StringBuilder cols = new StringBuilder();
            try (ResultSet rs = md.getColumns(null, "public", "jm", null)) {
                while (rs.next()) {
                    cols.append(rs.getString("COLUMN_NAME")).append(':')
                            .append(rs.getString("TYPE_NAME")).append(':')
                            .append(rs.getString("IS_NULLABLE")).append(' ');
                }
            }
            eq("id:int4:NO label:varchar:NO note:text:YES ", cols.toString(), "getColumns");
            try (ResultSet rs = md.getPrimaryKeys(null, "public", "jm")) {
                check(rs.next(), "getPrimaryKeys found none");
                eq("id", rs.getString("COLUMN_NAME"), "primary key column");
            }
            check(md.getSQLKeywords() != null, "getSQLKeywords");
            System.out.println("jdbc catalog ok");
        }
    }

    public static void main(String[] args) throws Exception {
        url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/ddb";
        switch (args[1]) {
            case "basics":
                basics();
                break;
            case "savepoints":
                savepoints();
                break;
            case "generated-keys":
                generatedKeys();
                break;
            case "catalog":
                catalog();
                break;
            default:
                throw new IllegalArgumentException("unknown mode " + args[1]);
        }
    }
}
