//! Bootstrapping service identities against a real nats-server: idempotent for
//! the same key, and a squatted service name is an error, never swallowed.

mod common;

use amai_bus::subjects::AggregateKind;
use amai_bus::IdentityKeys;
use amai_workers::bootstrap::ensure_service;

#[tokio::test]
async fn a_squatted_service_name_is_a_start_error() {
    let d = common::deploy().await;
    // Someone registers an agent under the name the next role's service wants.
    common::register(&d.store, "svc-llm").await;
    let service = IdentityKeys::generate();
    let err = ensure_service(
        &d.store,
        &d.operator,
        &service,
        "svc-llm",
        &[AggregateKind::Llm, AggregateKind::Failure],
        amai_bus::envelope::now_timestamp(),
    )
    .await
    .expect_err("the name is held by another identity");
    assert_eq!(err.name, "svc-llm");
    // Nothing was registered for the service key.
    let agg = amai_bus::Aggregate::agent(service.identity_id()).expect("agg");
    assert_eq!(
        d.store.chain_head(&agg).await.expect("head").aggregate_seq,
        0
    );
}

#[tokio::test]
async fn bootstrapping_the_same_service_twice_is_idempotent() {
    let d = common::deploy().await;
    let service = IdentityKeys::generate();
    let now = amai_bus::envelope::now_timestamp();
    let scopes = [AggregateKind::Llm, AggregateKind::Failure];
    let a = ensure_service(&d.store, &d.operator, &service, "svc-llm", &scopes, now)
        .await
        .expect("first");
    let b = ensure_service(&d.store, &d.operator, &service, "svc-llm", &scopes, now)
        .await
        .expect("second");
    assert_eq!(a, b);
    let state = d.store.identity_state(&a).await.expect("state");
    assert_eq!(state.scopes, vec!["llm".to_string(), "failure".to_string()]);
}
