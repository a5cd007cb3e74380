//! `deploy/nats/accounts.conf` on a real nats-server: only the admin user
//! administers streams; the Amai processes' user cannot create, delete or purge
//! one, yet runs a whole role (streams check, bootstrap, reactor, projection,
//! queries) and uses the nonce bucket and the blob store.

mod common;

use std::sync::Arc;
use std::time::Duration;

use amai_bus::blob::BlobStore;
use amai_bus::proto;
use amai_bus::query;
use amai_bus::streams::{ensure_streams, StreamSettings};
use amai_testkit::NatsServer;
use amai_workers::roles::identity::IdentityRole;
use amai_workers::runtime::{RoleRuntime, RoleRuntimeConfig};
use async_nats::jetstream::{self, stream};
use common::{bootstrap, register, trust_seq, wait_until};

const ADMIN: (&str, &str) = ("admin", "admin-secret");
const WORKERS: (&str, &str) = ("workers", "workers-secret");

/// A server running the repository's accounts.conf, with test passwords
/// (defined ahead of the file's text: nats-server does not pass variables of
/// an including file into the included one, it reads them from its env).
fn server() -> (NatsServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let accounts = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nats/accounts.conf"),
    )
    .expect("read accounts.conf");
    let conf = dir.path().join("server.conf");
    std::fs::write(
        &conf,
        format!(
            "AMAI_NATS_ADMIN_PASSWORD: \"{}\"\nAMAI_NATS_GATEWAY_PASSWORD: \"gateway-secret\"\n\
             AMAI_NATS_WORKERS_PASSWORD: \"{}\"\nAMAI_NATS_SYS_PASSWORD: \"sys-secret\"\n{accounts}",
            ADMIN.1, WORKERS.1
        ),
    )
    .expect("write server.conf");
    let server = NatsServer::start_with_args(&["-c".as_ref(), conf.as_os_str()]);
    (server, dir)
}

async fn connect(server: &NatsServer, (user, password): (&str, &str)) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .connect(server.url())
        .await
        .expect("connect")
}

/// A JetStream context whose denied requests fail within a bounded time.
fn js(client: &async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(client.clone())
}

fn scratch(name: &str) -> stream::Config {
    stream::Config {
        name: name.to_string(),
        subjects: vec![format!("amai.scratch.{name}")],
        ..Default::default()
    }
}

#[tokio::test]
async fn only_the_admin_user_administers_streams() {
    let (server, _dir) = server();
    let admin = js(&connect(&server, ADMIN).await);
    let app = js(&connect(&server, WORKERS).await);

    assert!(
        app.create_stream(scratch("BY_APP")).await.is_err(),
        "the app user cannot create a stream"
    );
    assert!(
        ensure_streams(&app, &StreamSettings::default())
            .await
            .is_err(),
        "nor the amai streams"
    );
    ensure_streams(&admin, &StreamSettings::default())
        .await
        .expect("the admin creates the amai streams");
    admin
        .create_stream(scratch("BY_ADMIN"))
        .await
        .expect("the admin creates a stream");
    admin
        .publish("amai.scratch.BY_ADMIN", "x".into())
        .await
        .expect("publish")
        .await
        .expect("ack");

    let s = app
        .get_stream("BY_ADMIN")
        .await
        .expect("the app reads stream info");
    assert!(s.purge().await.is_err(), "the app user cannot purge");
    assert!(
        app.delete_stream("BY_ADMIN").await.is_err(),
        "the app user cannot delete a stream"
    );
    assert!(
        app.update_stream(stream::Config {
            max_messages: 1,
            ..scratch("BY_ADMIN")
        })
        .await
        .is_err(),
        "the app user cannot update a stream"
    );
    let mut s = admin.get_stream("BY_ADMIN").await.expect("stream");
    assert_eq!(s.info().await.expect("info").state.messages, 1, "untouched");
    s.purge().await.expect("the admin purges");
    admin
        .delete_stream("BY_ADMIN")
        .await
        .expect("the admin deletes");
}

#[tokio::test]
async fn the_app_user_runs_a_role_once_the_admin_created_the_streams() {
    let (server, _dir) = server();
    let admin = js(&connect(&server, ADMIN).await);
    ensure_streams(&admin, &StreamSettings::default())
        .await
        .expect("streams");

    let client = connect(&server, WORKERS).await;
    // Streams that match their spec are only read: no admin right needed.
    let (store, _operator, signer) = bootstrap(&client, &StreamSettings::default()).await;
    let root = tempfile::tempdir().expect("dir");
    let mut role = RoleRuntime::start(
        Arc::new(IdentityRole),
        RoleRuntimeConfig::new(client.clone(), store.clone(), root.path(), signer),
    )
    .await
    .expect("role");
    let (id, position) = register(&store, "least-privileged").await;
    wait_until("trust initialised", || async {
        trust_seq(&store, &id).await == 1
    })
    .await;
    let got: proto::Identity = query::request(
        &client,
        query::IDENTITY_GET,
        &proto::GetIdentityRequest {
            selector: Some(proto::get_identity_request::Selector::Id(id.clone())),
            min_position: Some(position.into()),
        },
        Duration::from_secs(5),
    )
    .await
    .expect("query");
    assert_eq!(got.id, id);
    role.stop().await;

    // The gateway's nonce bucket and the blob store.
    let app = js(&client);
    let nonces = app
        .create_or_update_key_value(jetstream::kv::Config {
            bucket: "AMAI_NONCES".into(),
            history: 1,
            max_age: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .expect("nonce bucket");
    nonces.create("n1", "x".into()).await.expect("nonce");
    assert!(nonces.create("n1", "x".into()).await.is_err(), "replay");
    let blobs = BlobStore::open(&app, 1, 1024).await.expect("blob store");
    let blob = blobs.put(b"some large body").await.expect("put");
    assert_eq!(
        blobs.get(&blob.sha256).await.expect("get"),
        b"some large body".to_vec()
    );
}
