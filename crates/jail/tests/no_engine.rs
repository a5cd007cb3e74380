//! Without an engine, `Engine::connect` fails closed and says what to do. A
//! separate test binary, since it points `DOCKER_HOST` elsewhere for the process.

#[tokio::test]
async fn connect_without_an_engine_names_the_address_and_the_fix() {
    let socket =
        std::env::temp_dir().join(format!("amai-jail-no-engine-{}.sock", std::process::id()));
    let host = format!("unix://{}", socket.display());
    std::env::set_var("DOCKER_HOST", &host);
    let error = match amai_jail::Engine::connect().await {
        Ok(_) => panic!("connected to {host}, where nothing listens"),
        Err(error) => error,
    };
    assert!(
        matches!(error, amai_jail::ConnectError::NoEngine { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&host), "{message}");
    assert!(
        message.contains("scripts/ensure-deps.sh docker"),
        "{message}"
    );
}
