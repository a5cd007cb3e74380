//! Jail networks against the real Docker Engine and the real nft (needs root).
//! These tests never skip: without an engine or nft they fail, saying what to do.
//!
//! Traffic goes only to loopback and to the networks and containers the tests
//! create: "the internet" is a busybox `httpd` on an internal Docker network the
//! test creates, "a host service" a listener on 0.0.0.0 of this host, "another
//! jail" a second jail network. Nothing is sent to any other address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amai_jail::net::{
    remove_orphan_networks, CreateNetworkError, JailNetwork, JailNetworkNames, NetworkLog,
    NetworkPlan, Protocol, StaticResolver, Verdict, LLM_PROXY_PORT,
};
use amai_jail::{build_busybox, Engine};
use amai_jail_spec::{Endpoint, Host, NetworkPolicy};
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest};
use bollard::query_parameters::{LogsOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Label on everything these tests create besides jail networks, so a leftover
/// is recognisable.
const TEST_LABEL: &str = "amai.test";

async fn engine() -> Engine {
    match Engine::connect().await {
        Ok(engine) => engine,
        Err(error) => panic!("these tests need a Docker Engine: {error}"),
    }
}

fn docker() -> Docker {
    Docker::connect_with_local_defaults().expect("docker client")
}

async fn image(engine: &Engine) -> String {
    build_busybox(engine)
        .await
        .expect("busybox image builds")
        .reference
}

fn jail_id() -> String {
    format!("test-{}", uuid::Uuid::new_v4())
}

/// A hardened container like the jail runs (nobody, no capabilities,
/// no-new-privileges, read-only root, tmpfs /tmp) on `network`.
fn hardened(image: &str, network: &str, dns: Vec<String>, script: &str) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
        user: Some("65534:65534".into()),
        labels: Some(HashMap::from([(TEST_LABEL.to_owned(), "net".to_owned())])),
        host_config: Some(HostConfig {
            network_mode: Some(network.to_owned()),
            dns: Some(dns),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            readonly_rootfs: Some(true),
            privileged: Some(false),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_owned(),
                "rw,nosuid,nodev,size=16m,uid=65534,gid=65534,mode=1777".to_owned(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container removed (force) when dropped, even when the test panics.
struct Container {
    id: String,
}

impl Container {
    async fn create(config: ContainerCreateBody) -> Self {
        let created = docker()
            .create_container(None, config)
            .await
            .expect("container created");
        let container = Self { id: created.id };
        docker()
            .start_container(&container.id, None)
            .await
            .expect("container started");
        container
    }

    /// The container's address on `network`.
    async fn ip_on(&self, network: &str) -> IpAddr {
        let inspected = docker()
            .inspect_container(&self.id, None)
            .await
            .expect("inspect container");
        let address = inspected
            .network_settings
            .and_then(|s| s.networks)
            .and_then(|n| n.get(network).cloned())
            .and_then(|e| e.ip_address)
            .unwrap_or_default();
        address
            .parse()
            .unwrap_or_else(|_| panic!("container has no address on {network}: {address:?}"))
    }

    /// Stdout and stderr so far.
    async fn logs(&self) -> String {
        let options = LogsOptionsBuilder::new().stdout(true).stderr(true).build();
        let mut stream = docker().logs(&self.id, Some(options));
        let mut text = String::new();
        while let Some(item) = stream.next().await {
            text.push_str(&item.expect("log chunk").to_string());
        }
        text
    }

    /// Waits for the container to exit (at most two minutes: a hang is a failure)
    /// and returns its exit code and output.
    async fn finish(&self) -> (i64, String) {
        let mut wait = docker().wait_container(&self.id, None);
        let waited = tokio::time::timeout(Duration::from_secs(120), wait.next()).await;
        assert!(
            waited.is_ok(),
            "the jail container hung: {}",
            self.logs().await
        );
        let state = docker()
            .inspect_container(&self.id, None)
            .await
            .expect("inspect container")
            .state
            .unwrap_or_default();
        (state.exit_code.unwrap_or(-1), self.logs().await)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Synchronous: the test's runtime may be gone (panic).
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.id])
            .output();
    }
}

/// Runs `script` in a hardened container on the jail network and returns its exit
/// code and output.
async fn run_in_jail(image: &str, network: &JailNetwork, script: &str) -> (i64, String) {
    let config = hardened(
        image,
        network.docker_network_name(),
        network.dns_servers(),
        script,
    );
    let container = Container::create(config).await;
    let outcome = container.finish().await;
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    docker()
        .remove_container(&container.id, Some(options))
        .await
        .expect("container removed");
    outcome
}

/// A busybox httpd serving `standin` at `/` on port 8080, logging every request
/// (`-vv`) on stderr.
async fn start_httpd(image: &str, network: &str, dns: Vec<String>) -> Container {
    let script = "mkdir /tmp/www && echo standin > /tmp/www/index.html \
                  && exec httpd -f -vv -p 8080 -h /tmp/www";
    let container = Container::create(hardened(image, network, dns, script)).await;
    // Wait until httpd listens (its port shows in /proc/net/tcp or tcp6 as 1F90).
    for _ in 0..100 {
        if probe(&container, "grep -q ':1F90 ' /proc/net/tcp /proc/net/tcp6").await {
            return container;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("httpd did not start: {}", container.logs().await);
}

/// Whether `command` exits 0 inside `container` (docker exec).
async fn probe(container: &Container, command: &str) -> bool {
    let exec = docker()
        .create_exec(
            &container.id,
            bollard::models::ExecConfig {
                cmd: Some(vec!["/bin/sh".into(), "-c".into(), command.into()]),
                ..Default::default()
            },
        )
        .await
        .expect("exec created");
    docker()
        .start_exec(&exec.id, None)
        .await
        .expect("exec started");
    for _ in 0..100 {
        let inspected = docker()
            .inspect_exec(&exec.id)
            .await
            .expect("exec inspected");
        if inspected.running != Some(true) {
            return inspected.exit_code == Some(0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Removes a jail network's Docker network and nft table when dropped, so a
/// failing test leaves nothing behind (after a successful `close` there is
/// nothing left to remove).
struct Leftovers(JailNetworkNames);

impl Leftovers {
    fn of(network: &JailNetwork) -> Self {
        Self(network.names().clone())
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.0.network])
            .output();
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", &self.0.table])
            .output();
    }
}

/// An internal Docker network standing in for "the internet", removed on drop.
struct TestNetwork {
    name: String,
}

impl TestNetwork {
    async fn create() -> Self {
        let name = format!("amai-test-{}", uuid::Uuid::new_v4());
        docker()
            .create_network(NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                internal: Some(true),
                labels: Some(HashMap::from([(TEST_LABEL.to_owned(), "net".to_owned())])),
                ..Default::default()
            })
            .await
            .expect("test network created");
        Self { name }
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
    }
}

/// A TCP listener on the host counting the connections it accepted; it answers
/// every request with `proxy-answer` and the request line.
struct HostListener {
    address: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HostListener {
    async fn bind(address: &str) -> Self {
        let listener = TcpListener::bind(address)
            .await
            .expect("host listener binds");
        let address = listener.local_addr().expect("local address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut request = vec![0u8; 4096];
                    let n = stream.read(&mut request).await.unwrap_or(0);
                    let text = String::from_utf8_lossy(&request[..n]);
                    let first = text.lines().next().unwrap_or("").to_owned();
                    let body = format!("proxy-answer {first}\n");
                    let response = format!(
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        Self {
            address,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for HostListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn nft_table(table: &str) -> Option<String> {
    let output = tokio::process::Command::new("nft")
        .args(["list", "table", "inet", table])
        .output()
        .await
        .expect("nft runs (install the nftables package)");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn network_exists(name: &str) -> bool {
    match docker().inspect_network(name, None).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => false,
        Err(error) => panic!("inspecting network {name}: {error}"),
    }
}

fn assert_logged(log: &NetworkLog, protocol: Protocol, destination: &str, verdict: Verdict) {
    assert!(
        log.find(protocol, destination, verdict).next().is_some(),
        "expected {protocol:?} {destination} {verdict:?} in the network log:\n{}",
        log.to_json_lines()
    );
}

/// The lines between `<marker>` and `</marker>`.
fn framed<'a>(output: &'a str, marker: &str) -> String {
    output
        .lines()
        .skip_while(|line| !line.contains(&format!("<{marker}>")))
        .take_while(|line| !line.contains(&format!("</{marker}>")))
        .collect::<Vec<&'a str>>()
        .join("\n")
}

/// A denial by the nft table seen by busybox wget: "Connection refused" (a reset
/// answering the SYN), never a reset after a handshake, never a timeout.
fn assert_refused(output: &str, marker: &str) {
    let lines = framed(output, marker);
    assert!(
        lines.contains("Connection refused"),
        "{marker}: expected Connection refused:\n{output}"
    );
    assert!(
        !lines.contains("reset"),
        "{marker}: a reset after the handshake, not a refusal:\n{output}"
    );
    assert!(
        output.contains(&format!("{marker}_rc=1")),
        "{marker}: wget should fail fast with 1 (143 is busybox timeout killing a hang):\n{output}"
    );
}

/// A denial by the catch-all listener (a destination the table lets through,
/// refused once the listener knows more) seen by busybox wget: a reset right
/// after the handshake, never a timeout.
fn assert_reset(output: &str, marker: &str) {
    let lines = framed(output, marker);
    assert!(
        lines.contains("reset"),
        "{marker}: expected a reset:\n{output}"
    );
    assert!(
        output.contains(&format!("{marker}_rc=1")),
        "{marker}: wget should fail fast with 1 (143 is busybox timeout killing a hang):\n{output}"
    );
}

/// `wget url` framed by markers, printing its exit code as `<marker>_rc=N`.
fn wget(marker: &str, url: &str) -> String {
    format!(
        "echo '<{marker}>'; timeout 20 wget -qO- {url} 2>&1; echo {marker}_rc=$?; echo '</{marker}>'; "
    )
}

fn allow(endpoints: Vec<(Host, u16)>) -> NetworkPolicy {
    NetworkPolicy::Allow(
        endpoints
            .into_iter()
            .map(|(host, port)| Endpoint { host, port })
            .collect(),
    )
}

#[tokio::test]
async fn llm_only_reaches_the_proxy_and_no_host_port() {
    let engine = engine().await;
    let image = image(&engine).await;
    let proxy = HostListener::bind("127.0.0.1:0").await;
    let host_service = HostListener::bind("0.0.0.0:0").await;
    let plan = NetworkPlan::new(jail_id(), NetworkPolicy::LlmOnly).llm_proxy(proxy.address);
    let network = JailNetwork::create(&engine, plan).await.expect("network");
    let _leftovers_network = Leftovers::of(&network);
    let gateway = network.gateway();
    let service_port = host_service.address.port();
    assert_eq!(
        network.llm_base_url(),
        format!("http://{gateway}:{LLM_PROXY_PORT}")
    );

    let script = format!(
        "{}{}",
        wget("proxy", &format!("{}/v1/models", network.llm_base_url())),
        wget("service", &format!("http://{gateway}:{service_port}/")),
    );
    let (_, output) = run_in_jail(&image, &network, &script).await;

    assert!(
        output.contains("proxy-answer GET /v1/models HTTP/1.1"),
        "{output}"
    );
    assert!(output.contains("proxy_rc=0"), "{output}");
    assert_refused(&output, "service");
    assert_eq!(proxy.accepted(), 1);
    assert_eq!(host_service.accepted(), 0, "the host service was reached");

    let log = network.close().await.expect("close");
    assert_logged(
        &log,
        Protocol::Tcp,
        &format!("{gateway}:{LLM_PROXY_PORT}"),
        Verdict::Allowed,
    );
    assert_logged(
        &log,
        Protocol::Tcp,
        &format!("{gateway}:{service_port}"),
        Verdict::Denied,
    );
}

#[tokio::test]
async fn another_jail_is_unreachable() {
    let engine = engine().await;
    let image = image(&engine).await;
    let first = JailNetwork::create(&engine, NetworkPlan::new(jail_id(), allow(Vec::new())))
        .await
        .expect("first network");
    let _leftovers_first = Leftovers::of(&first);
    let second = JailNetwork::create(&engine, NetworkPlan::new(jail_id(), allow(Vec::new())))
        .await
        .expect("second network");
    let _leftovers_second = Leftovers::of(&second);
    let server = start_httpd(&image, second.docker_network_name(), second.dns_servers()).await;
    let target = server.ip_on(second.docker_network_name()).await;

    // The other jail's gateway is an address of this host too.
    let host_service = HostListener::bind("0.0.0.0:0").await;
    let other_gateway = format!("{}:{}", second.gateway(), host_service.address.port());
    let script = format!(
        "{}{}",
        wget("jail", &format!("http://{target}:8080/")),
        wget("gateway", &format!("http://{other_gateway}/"))
    );
    // Each concurrent jail network reads its own NFLOG group.
    let groups = (first.log_group(), second.log_group());
    assert!(groups.0.is_some() && groups.1.is_some(), "{groups:?}");
    assert_ne!(groups.0, groups.1);
    let (_, output) = run_in_jail(&image, &first, &script).await;
    assert_refused(&output, "jail");
    assert_refused(&output, "gateway");
    assert_eq!(host_service.accepted(), 0, "the host service was reached");
    let served = server.logs().await;
    assert!(
        !served.contains("url:"),
        "the other jail was reached: {served}"
    );
    drop(server);

    let log = first.close().await.expect("close first");
    assert_logged(&log, Protocol::Tcp, &other_gateway, Verdict::Denied);
    assert_logged(
        &log,
        Protocol::Tcp,
        &format!("{target}:8080"),
        Verdict::Denied,
    );
    let second_log = second.close().await.expect("close second");
    assert!(
        second_log.entries.is_empty(),
        "the first jail's refusals went to the second's log:\n{}",
        second_log.to_json_lines()
    );
}

#[tokio::test]
async fn the_internet_is_unreachable_and_every_route_leads_to_the_gateway() {
    let engine = engine().await;
    let image = image(&engine).await;
    let proxy = HostListener::bind("127.0.0.1:0").await;
    let internet = TestNetwork::create().await;
    let standin = start_httpd(&image, &internet.name, Vec::new()).await;
    let standin_ip = standin.ip_on(&internet.name).await;
    let plan = NetworkPlan::new(jail_id(), NetworkPolicy::LlmOnly).llm_proxy(proxy.address);
    let network = JailNetwork::create(&engine, plan).await.expect("network");
    let _leftovers_network = Leftovers::of(&network);
    let gateway = network.gateway();

    let script = format!(
        "{}echo '<route>'; ip route; echo '</route>'; echo '<ping>'; \
         timeout 20 ping -c 1 -W 5 {standin_ip} 2>&1; echo ping_rc=$?; echo '</ping>'; \
         echo '<udp>'; timeout 5 tftp -g -r x -l /tmp/x {standin_ip} 9999 2>&1; echo udp_rc=$?; echo '</udp>'; \
         echo '<v6>'; cat /proc/net/if_inet6; echo '</v6>'",
        wget("internet", &format!("http://{standin_ip}:8080/")),
    );
    let (_, output) = run_in_jail(&image, &network, &script).await;
    assert_refused(&output, "internet");
    let served = standin.logs().await;
    assert!(
        !served.contains("url:"),
        "the stand-in was reached: {served}"
    );
    assert!(!output.contains("ping_rc=0"), "ping got through: {output}");

    // Every route goes through the gateway, i.e. through the host's rules.
    let routes: Vec<&str> = output
        .lines()
        .skip_while(|line| *line != "<route>")
        .skip(1)
        .take_while(|line| *line != "</route>")
        .collect();
    assert_eq!(routes.len(), 2, "{output}");
    // No IPv6 address at all (the network has IPv6 off; the rules reject it too).
    assert!(output.contains("<v6>\n</v6>"), "{output}");
    assert!(
        routes[0].starts_with(&format!("default via {gateway} dev eth0")),
        "{output}"
    );
    assert!(
        routes[1].starts_with(network.subnet()) && routes[1].contains("dev eth0"),
        "{output}"
    );

    let table = network.check_rules().await.expect("rules in place");
    let bridge = &network.names().bridge;
    assert!(
        table.contains(&format!("amai.jail={}", network.jail_id())),
        "{table}"
    );
    // Only the proxy is redirected to the catch-all listener ...
    assert!(
        table.contains(&format!(
            "iifname \"{bridge}\" ip daddr . tcp dport @allowed_tcp redirect to :"
        )),
        "{table}"
    );
    assert!(
        table.contains(&format!("elements = {{ {gateway} . {LLM_PROXY_PORT} }}")),
        "{table}"
    );
    // ... every other SYN, and UDP and ICMP, is logged to the jail's group, then
    // rejected.
    let group = network.log_group().expect("a log group");
    let table_name = &network.names().table;
    assert_eq!(
        table
            .matches(&format!(
                "iifname \"{bridge}\" meta nfproto ipv4 tcp flags syn / syn,ack log prefix \"{table_name}\" group {group}\n"
            ))
            .count(),
        2,
        "{table}"
    );
    assert_eq!(
        table
            .matches(&format!(
                "iifname \"{bridge}\" meta nfproto ipv4 meta l4proto {{ icmp, udp }} log prefix \"{table_name}\" group {group}\n"
            ))
            .count(),
        2,
        "{table}"
    );
    assert!(
        table.contains(&format!("iifname \"{bridge}\" meta l4proto tcp counter")),
        "{table}"
    );
    assert!(
        table.contains(&format!("oifname \"{bridge}\" counter")),
        "{table}"
    );
    // The UDP datagram (tftp; busybox nc has no UDP and ping needs a raw socket
    // nobody cannot open) met the forward chain's reject: its counter moved. tftp's
    // unconnected socket does not see the ICMP error and retries until `timeout`
    // stops it, so its exit code says nothing here.
    let forward = table
        .split("chain forward")
        .nth(1)
        .expect("a forward chain");
    let rejected: u64 = forward
        .lines()
        .find(|line| line.contains(&format!("iifname \"{bridge}\" counter packets")))
        .and_then(|line| line.split("packets ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter on the forward reject:\n{table}"));
    assert!(rejected > 0, "nothing met the forward reject:\n{table}");

    let log = network.close().await.expect("close");
    assert_logged(
        &log,
        Protocol::Tcp,
        &format!("{standin_ip}:8080"),
        Verdict::Denied,
    );
    // The tftp datagram is in the log too (once per flow, however often tftp
    // retried it within the dedupe window).
    assert_logged(
        &log,
        Protocol::Udp,
        &format!("{standin_ip}:9999"),
        Verdict::Denied,
    );
    assert_eq!(log.allowed(), 0, "{}", log.to_json_lines());
}

/// A ping from the jail network (as root with only `CAP_NET_RAW`: the hardened
/// jail user cannot open an ICMP socket at all) is rejected and logged denied,
/// once for the echo flow however many echoes within the dedupe window.
#[tokio::test]
async fn a_ping_is_rejected_and_logged() {
    let engine = engine().await;
    let image = image(&engine).await;
    let internet = TestNetwork::create().await;
    let standin = start_httpd(&image, &internet.name, Vec::new()).await;
    let standin_ip = standin.ip_on(&internet.name).await;
    let network = JailNetwork::create(&engine, NetworkPlan::new(jail_id(), allow(Vec::new())))
        .await
        .expect("network");
    let _leftovers_network = Leftovers::of(&network);

    let mut config = hardened(
        &image,
        network.docker_network_name(),
        network.dns_servers(),
        &format!(
            "echo '<ping>'; timeout 20 ping -c 2 -W 2 {standin_ip} 2>&1; echo ping_rc=$?; echo '</ping>'"
        ),
    );
    config.user = Some("0:0".into());
    if let Some(host_config) = config.host_config.as_mut() {
        host_config.cap_add = Some(vec!["NET_RAW".into()]);
    }
    let container = Container::create(config).await;
    let (_, output) = container.finish().await;
    drop(container);
    assert!(
        output.contains("ping_rc=1"),
        "ping got through or hung: {output}"
    );
    assert!(
        !output.contains("permission denied"),
        "ping sent nothing: {output}"
    );

    let log = network.close().await.expect("close");
    assert_logged(
        &log,
        Protocol::Icmp,
        &standin_ip.to_string(),
        Verdict::Denied,
    );
    assert_eq!(log.allowed(), 0, "{}", log.to_json_lines());
}

#[tokio::test]
async fn dns_is_logged_refused_or_synthetic_and_the_allowlist_is_exact() {
    let engine = engine().await;
    let image = image(&engine).await;
    let internet = TestNetwork::create().await;
    let standin = start_httpd(&image, &internet.name, Vec::new()).await;
    let standin_ip = standin.ip_on(&internet.name).await;
    let policy = allow(vec![
        (Host::Dns("standin.test".into()), 8080),
        (Host::Ip(standin_ip), 8080),
    ]);
    let plan = NetworkPlan::new(jail_id(), policy)
        .resolver(StaticResolver::new().with("standin.test", standin_ip));
    let network = JailNetwork::create(&engine, plan).await.expect("network");
    let _leftovers_network = Leftovers::of(&network);

    let script = format!(
        "echo '<blocked>'; timeout 20 nslookup blocked.test 2>&1; echo blocked_rc=$?; echo '</blocked>'; \
         echo '<direct>'; timeout 20 nslookup direct.test {standin_ip} 2>&1; echo direct_rc=$?; echo '</direct>'; \
         echo '<allowed>'; timeout 20 nslookup standin.test 2>&1; echo allowed_rc=$?; echo '</allowed>'; \
         {}{}{}{}",
        wget("by_name", "http://standin.test:8080/"),
        wget("by_ip", &format!("http://{standin_ip}:8080/")),
        wget("other_port", &format!("http://{standin_ip}:8081/")),
        wget("name_other_port", "http://standin.test:8081/"),
    );
    let (_, output) = run_in_jail(&image, &network, &script).await;

    assert!(output.contains("blocked_rc=1"), "{output}");
    assert!(output.contains("REFUSED"), "{output}");
    assert!(output.contains("direct_rc=1"), "{output}");
    assert!(output.contains("allowed_rc=0"), "{output}");
    assert!(output.contains("Address: 198.18.0.1"), "{output}");
    assert!(output.contains("by_name_rc=0"), "{output}");
    assert!(output.contains("by_ip_rc=0"), "{output}");
    assert_eq!(output.matches("standin\n").count(), 2, "{output}");
    assert_refused(&output, "other_port");
    assert_refused(&output, "name_other_port");
    let served = standin.logs().await;
    assert_eq!(served.matches("url:/").count(), 2, "{served}");

    let log = network.close().await.expect("close");
    assert_logged(&log, Protocol::Dns, "blocked.test", Verdict::Denied);
    // A query sent straight to another server is redirected to the responder
    // too: it never leaves.
    assert_logged(&log, Protocol::Dns, "direct.test", Verdict::Denied);
    assert_logged(&log, Protocol::Dns, "standin.test", Verdict::Allowed);
    assert_logged(&log, Protocol::Tcp, "standin.test:8080", Verdict::Allowed);
    assert_logged(
        &log,
        Protocol::Tcp,
        &format!("{standin_ip}:8080"),
        Verdict::Allowed,
    );
    assert_logged(
        &log,
        Protocol::Tcp,
        &format!("{standin_ip}:8081"),
        Verdict::Denied,
    );
    // Refused at the SYN by the table, logged through NFLOG with the name
    // behind the synthetic address.
    assert_logged(&log, Protocol::Tcp, "standin.test:8081", Verdict::Denied);
    // The JSON-lines encoding keeps everything but sub-millisecond time.
    let round_trip = NetworkLog::from_json_lines(&log.to_json_lines()).expect("parses");
    assert_eq!(round_trip.entries.len(), log.entries.len());
    for (parsed, original) in round_trip.entries.iter().zip(&log.entries) {
        assert_eq!(
            (
                &parsed.protocol,
                &parsed.destination,
                &parsed.verdict,
                &parsed.detail
            ),
            (
                &original.protocol,
                &original.destination,
                &original.verdict,
                &original.detail
            )
        );
    }
}

#[tokio::test]
async fn an_allowlisted_name_cannot_resolve_onto_the_host() {
    let engine = engine().await;
    let image = image(&engine).await;
    let loopback_service = HostListener::bind("127.0.0.1:0").await;
    let host_service = HostListener::bind("0.0.0.0:0").await;
    // Another jail network's gateway: an address of this host's.
    let other = JailNetwork::create(&engine, NetworkPlan::new(jail_id(), allow(Vec::new())))
        .await
        .expect("other network");
    let _leftovers_other = Leftovers::of(&other);
    let (loop_port, host_port) = (loopback_service.address.port(), host_service.address.port());
    let policy = allow(vec![
        (Host::Dns("loop.test".into()), loop_port),
        (Host::Dns("host.test".into()), host_port),
    ]);
    let resolver = StaticResolver::new()
        .with("loop.test", "127.0.0.1".parse().expect("ip"))
        .with("host.test", IpAddr::V4(other.gateway()));
    let network = JailNetwork::create(
        &engine,
        NetworkPlan::new(jail_id(), policy).resolver(resolver),
    )
    .await
    .expect("network");
    let _leftovers_network = Leftovers::of(&network);

    let script = format!(
        "{}{}",
        wget("loop", &format!("http://loop.test:{loop_port}/")),
        wget("host", &format!("http://host.test:{host_port}/")),
    );
    let (_, output) = run_in_jail(&image, &network, &script).await;
    assert_reset(&output, "loop");
    assert_reset(&output, "host");
    assert_eq!(loopback_service.accepted(), 0, "loopback reached");

    let log = network.close().await.expect("close");
    other.close().await.expect("close other");
    assert_logged(
        &log,
        Protocol::Tcp,
        &format!("loop.test:{loop_port}"),
        Verdict::Denied,
    );
    assert_logged(
        &log,
        Protocol::Tcp,
        &format!("host.test:{host_port}"),
        Verdict::Denied,
    );
    assert!(
        log.entries
            .iter()
            .filter(|e| e.protocol == Protocol::Tcp)
            .all(|e| e.verdict == Verdict::Denied),
        "{}",
        log.to_json_lines()
    );
}

#[tokio::test]
async fn close_removes_the_table_and_the_network_even_with_a_container_attached() {
    let engine = engine().await;
    let image = image(&engine).await;
    let proxy = HostListener::bind("127.0.0.1:0").await;
    let plan = NetworkPlan::new(jail_id(), NetworkPolicy::LlmOnly).llm_proxy(proxy.address);
    let network = JailNetwork::create(&engine, plan).await.expect("network");
    let _leftovers_network = Leftovers::of(&network);
    let names = network.names().clone();
    assert!(nft_table(&names.table).await.is_some());
    assert!(network_exists(&names.network).await);
    let attached = Container::create(hardened(
        &image,
        &names.network,
        network.dns_servers(),
        "sleep 120",
    ))
    .await;

    network.close().await.expect("close");
    assert!(nft_table(&names.table).await.is_none(), "table left");
    assert!(!network_exists(&names.network).await, "network left");
    drop(attached);
}

#[tokio::test]
async fn remove_orphan_networks_removes_a_network_never_closed() {
    let engine = engine().await;
    let jail = jail_id();
    let network = JailNetwork::create(&engine, NetworkPlan::new(&jail, allow(Vec::new())))
        .await
        .expect("network");
    let _leftovers_network = Leftovers::of(&network);
    let names = JailNetworkNames::for_jail(&jail);
    assert_eq!(network.names(), &names);
    std::mem::forget(network);
    assert!(nft_table(&names.table).await.is_some());

    // Every other jail counts as live: tests run in parallel.
    let removed = remove_orphan_networks(&engine, |id| id != jail)
        .await
        .expect("orphans removed");
    assert_eq!(removed.networks, vec![names.network.clone()]);
    assert_eq!(removed.tables, vec![names.table.clone()]);
    assert!(nft_table(&names.table).await.is_none(), "table left");
    assert!(!network_exists(&names.network).await, "network left");
}

#[tokio::test]
async fn a_second_network_for_the_same_jail_is_refused() {
    let engine = engine().await;
    let jail = jail_id();
    let network = JailNetwork::create(&engine, NetworkPlan::new(&jail, allow(Vec::new())))
        .await
        .expect("network");
    let _leftovers_network = Leftovers::of(&network);
    let again = JailNetwork::create(&engine, NetworkPlan::new(&jail, allow(Vec::new()))).await;
    assert!(
        matches!(again, Err(CreateNetworkError::Exists { .. })),
        "{again:?}"
    );
    // The refused attempt removed nothing of the first.
    assert!(network.check_rules().await.is_ok());
    assert!(network_exists(network.docker_network_name()).await);
    network.close().await.expect("close");
}

#[tokio::test]
async fn plans_that_need_no_network_or_reach_nothing_are_refused() {
    let engine = engine().await;
    let none = JailNetwork::create(&engine, NetworkPlan::new(jail_id(), NetworkPolicy::None)).await;
    assert!(
        matches!(none, Err(CreateNetworkError::PolicyNone)),
        "{none:?}"
    );
    let no_proxy =
        JailNetwork::create(&engine, NetworkPlan::new(jail_id(), NetworkPolicy::LlmOnly)).await;
    assert!(
        matches!(no_proxy, Err(CreateNetworkError::NoLlmProxy)),
        "{no_proxy:?}"
    );
    let bad_id = JailNetwork::create(&engine, NetworkPlan::new("a b\"", allow(Vec::new()))).await;
    assert!(
        matches!(bad_id, Err(CreateNetworkError::InvalidJailId { .. })),
        "{bad_id:?}"
    );
}
