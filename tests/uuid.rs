//! The uuid type through tokio-postgres: binary parameters and results (16 bytes, as
//! PostgreSQL sends them), and keys made by `gen_random_uuid()` at one gateway that route
//! to their shard on the ring and are found again by key through every gateway.

mod common;

use common::{connect, sqlstate, TestCluster, TestNode};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};

/// A uuid as its 16 bytes, sent and received in binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Uuid([u8; 16]);

impl<'a> FromSql<'a> for Uuid {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Uuid(raw.try_into()?))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::UUID
    }
}

impl ToSql for Uuid {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::UUID
    }
    tokio_postgres::types::to_sql_checked!();
}

/// Makes 30 rows keyed by `gen_random_uuid()` through `ports[0]`, and finds each by its key
/// (a binary parameter) through every port.
async fn random_keys_are_found_by_key(ports: &[u16]) {
    let c = connect(ports[0]).await;
    c.batch_execute("CREATE TABLE k (id UUID PRIMARY KEY DEFAULT gen_random_uuid(), n INT)")
        .await
        .unwrap();
    let mut made = std::collections::HashSet::new();
    for n in 0..30i32 {
        let row = c
            .query_one("INSERT INTO k (n) VALUES ($1) RETURNING id", &[&n])
            .await
            .unwrap();
        let id: Uuid = row.get(0);
        assert_eq!(id.0[6] >> 4, 4, "version 4");
        assert_eq!(id.0[8] >> 6, 0b10, "RFC 4122 variant");
        made.insert((id, n));
    }
    assert_eq!(made.len(), 30);
    for &port in ports {
        let c = connect(port).await;
        let find = c
            .prepare("SELECT n, id FROM k WHERE id = $1")
            .await
            .unwrap();
        assert_eq!(find.params(), &[Type::UUID]);
        for &(id, n) in &made {
            let row = c.query_one(&find, &[&id]).await.unwrap();
            assert_eq!((row.get::<_, i32>(0), row.get::<_, Uuid>(1)), (n, id));
        }
        // A text parameter for a uuid slot is parsed as its literal would be, and refused
        // with 22P02 when it is not a uuid.
        let text = c
            .prepare_typed("SELECT count(*) FROM k WHERE id = $1::uuid", &[Type::TEXT])
            .await
            .unwrap();
        let e = c.query_one(&text, &[&"nope"]).await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("22P02"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uuid_keys_on_a_node() {
    let node = TestNode::start();
    random_keys_are_found_by_key(&[node.sql_port]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uuid_keys_on_every_shard_through_every_gateway() {
    let cluster = tokio::task::spawn_blocking(|| {
        let cluster = TestCluster::new("uuid", 3);
        cluster.init();
        cluster
    })
    .await
    .unwrap();
    let ports: Vec<u16> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| cluster.sql_port(n))
        .collect();
    random_keys_are_found_by_key(&ports).await;
}
