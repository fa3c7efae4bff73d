//! One connection to PostgreSQL with its prepared statements, and how a
//! URL is connected to (with TLS when the URL asks for it, as managed
//! databases do).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Row, Socket, Statement};

use super::io::IoThread;
use super::pg_error;
use crate::store::StoreError;

/// A connection and the statements prepared on it (each hot statement is
/// parsed once per connection, not per call).
pub(super) struct Conn {
    client: Client,
    prepared: Mutex<HashMap<&'static str, Statement>>,
}

impl Conn {
    pub(super) async fn connect(config: &Config) -> Result<Conn, StoreError> {
        let client = if config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
            connect_with(config, tokio_postgres::NoTls).await?
        } else {
            connect_with(config, tls()).await?
        };
        // A host stopped inside a transaction (a paused VM) would hold its
        // row locks, and keep a partition from being taken over, for as
        // long as it is stopped: the server ends such a transaction. Ours
        // never sit idle that long.
        client
            .batch_execute("SET idle_in_transaction_session_timeout = '5s'")
            .await
            .map_err(pg_error)?;
        Ok(Conn {
            client,
            prepared: Mutex::new(HashMap::new()),
        })
    }

    pub(super) fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    async fn statement(&self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.prepared.lock().expect("statements").get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.prepared
            .lock()
            .expect("statements")
            .insert(sql, statement.clone());
        Ok(statement)
    }

    pub(super) async fn execute(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.execute(&statement, params).await
    }

    pub(super) async fn query(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.query(&statement, params).await
    }

    pub(super) async fn query_opt(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.query_opt(&statement, params).await
    }

    pub(super) async fn query_one(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.query_one(&statement, params).await
    }

    pub(super) async fn batch(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.client.batch_execute(sql).await
    }
}

/// A client whose connection runs on a task of its own until it ends.
async fn connect_with<T>(config: &Config, tls: T) -> Result<Client, StoreError>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config.connect(tls).await.map_err(pg_error)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "a PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// TLS with the system's trusted roots (webpki's bundle).
pub(super) fn tls() -> tokio_postgres_rustls::MakeRustlsConnect {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

/// Read connections shared round-robin: a tokio-postgres client pipelines
/// the queries of many callers on one connection. A closed one is replaced
/// on its next use.
pub(super) struct Readers {
    config: Config,
    /// Where the connections run.
    io: Arc<IoThread>,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Readers {
    pub(super) fn new(config: Config, count: usize, io: Arc<IoThread>) -> Readers {
        Readers {
            config,
            io,
            slots: (0..count).map(|_| tokio::sync::Mutex::new(None)).collect(),
            next: Default::default(),
        }
    }

    pub(super) async fn get(&self) -> Result<Arc<Conn>, StoreError> {
        use std::sync::atomic::Ordering;
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[n].lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        let config = self.config.clone();
        let conn = Arc::new(
            self.io
                .run(async move { Conn::connect(&config).await })
                .await?,
        );
        *slot = Some(conn.clone());
        Ok(conn)
    }
}
