//! Jails through the gateway's `JailService`: [`Agent::create_jail`] signs a
//! `jail.requested` on the agent's own chain (the jail runs under that
//! identity), [`Agent::reproduce_jail`] the same for a reproduction; the reads
//! and `Run`/`Delete` are signed requests.

use std::time::Duration;

use amai_bus::envelope::EventDraft;
use amai_bus::jail::jail_id;
use amai_bus::proto::{self, payload::Kind, SignedEvent};
use amai_jail_spec::JailSpec;
use amai_proto::wire::{
    DELETE_JAIL_METHOD, GET_JAIL_DIFF_METHOD, GET_JAIL_LOGS_METHOD, GET_JAIL_NETWORK_LOG_METHOD,
    GET_JAIL_STATUS_METHOD, GET_JAIL_USAGE_METHOD, LIST_JAILS_METHOD, RUN_JAIL_METHOD,
};

use crate::{Agent, AmaiClient, ClientError};

/// The jail service's identity name (its key seals the jails' LLM keys).
pub const JAIL_SERVICE: &str = "svc-jail";

/// Specs larger than this go to the blob store first (the event stays well
/// under the gateway's default event size limit).
pub const INLINE_SPEC_MAX: usize = 128 * 1024;

/// A run's output as `GetLogs` streams it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JailLogs {
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

/// Which `JailService` command RPC carries a request.
#[derive(Clone, Copy, Debug)]
enum JailRpc {
    Create,
    Reproduce { wait: Option<Duration> },
}

impl Agent {
    /// Parses `spec_json` locally (so a bad spec fails before anything is
    /// signed, with the JSON path of every error), then requests the jail;
    /// `run` starts it as soon as it is created.
    pub async fn create_jail(
        &self,
        spec_json: &[u8],
        run: bool,
    ) -> Result<proto::Jail, ClientError> {
        self.request_jail(spec_json, run, "", JailRpc::Create).await
    }

    /// Runs `original`'s spec again as a new jail (its LLM session, if any,
    /// replayed from the original's recordings by a new replay session) and,
    /// with `wait`, waits (at most that long) for the verdict
    /// (`jail.reproducibility_checked`).
    pub async fn reproduce_jail(
        &self,
        original: &str,
        spec_json: &[u8],
        wait: Option<Duration>,
    ) -> Result<proto::Jail, ClientError> {
        self.request_jail(spec_json, true, original, JailRpc::Reproduce { wait })
            .await
    }

    /// The LLM session of a new jail and its key: per the spec, a new key of
    /// an existing session, or a new session; for a reproduction always a new
    /// replay session of the original's recordings.
    async fn jail_llm_session(
        &self,
        spec: &JailSpec,
        reproduces: &str,
    ) -> Result<Option<(String, crate::SessionKey)>, ClientError> {
        use amai_jail_spec::{LlmMode, LlmSpec, LlmUpstreams};
        let Some(llm) = &spec.llm else {
            return Ok(None);
        };
        if !reproduces.is_empty() {
            let original = self.client().jail(reproduces).await?;
            if original.llm_session_id.is_empty() {
                return Err(ClientError::Input(format!(
                    "jail {reproduces} ran without an LLM session: nothing to replay"
                )));
            }
            let (session, key) = self
                .create_llm_session_from(
                    proto::LlmMode::Replay,
                    Vec::new(),
                    proto::LlmMatchOptions::default(),
                    &original.llm_session_id,
                )
                .await?;
            return Ok(Some((session.session_id, key)));
        }
        Ok(Some(match llm {
            LlmSpec::Session(id) => {
                let (session, key) = self.issue_llm_key(id).await?;
                (session.session_id, key)
            }
            LlmSpec::Create(create) => {
                let upstreams = match create.upstream {
                    LlmUpstreams::OpenAi => vec![proto::LlmUpstream::Openai],
                    LlmUpstreams::Anthropic => vec![proto::LlmUpstream::Anthropic],
                    LlmUpstreams::All => Vec::new(),
                };
                let mode = match create.mode {
                    LlmMode::Record => proto::LlmMode::Record,
                    LlmMode::Replay => proto::LlmMode::Replay,
                };
                let (session, key) = self
                    .create_llm_session_from(
                        mode,
                        upstreams,
                        proto::LlmMatchOptions::default(),
                        create.replay_from.as_deref().unwrap_or_default(),
                    )
                    .await?;
                (session.session_id, key)
            }
        }))
    }

    /// The jail service's identity id and X25519 key, read and verified from
    /// its own chain (never from a projection).
    async fn jail_service_key(&self) -> Result<(String, [u8; 32]), ClientError> {
        let listed = self.client().get_keys(JAIL_SERVICE).await?;
        let state = crate::audit::identity_state(self.client(), &listed.id)
            .await?
            .ok_or_else(|| {
                ClientError::Integrity(format!(
                    "the jail service {JAIL_SERVICE} ({}) has no verifiable chain",
                    listed.id
                ))
            })?;
        if state.revoked.is_some() {
            return Err(ClientError::Input(format!(
                "the jail service {JAIL_SERVICE} is revoked"
            )));
        }
        Ok((state.id.to_string(), state.current_key().x25519_key))
    }

    async fn request_jail(
        &self,
        spec_json: &[u8],
        run: bool,
        reproduces: &str,
        rpc: JailRpc,
    ) -> Result<proto::Jail, ClientError> {
        let spec = JailSpec::from_json(spec_json)
            .map_err(|e| ClientError::Input(format!("the jail spec is invalid: {e}")))?;
        let digest = spec.canonical_digest().to_vec();
        let (inline, blob) = if spec_json.len() > INLINE_SPEC_MAX {
            (Vec::new(), Some(self.put_blob(spec_json.to_vec()).await?))
        } else {
            (spec_json.to_vec(), None)
        };
        let llm = self.jail_llm_session(&spec, reproduces).await?;
        let service = match &llm {
            Some(_) => Some(self.jail_service_key().await?),
            None => None,
        };
        let aggregate = self.aggregate()?;
        let (keys, id) = (self.keys().clone(), self.id().to_string());
        self.retry_signed(
            |seq, hash| {
                // The event id comes first: the jail id is derived from it,
                // and the sealed key is bound to it.
                let event_id = uuid::Uuid::now_v7();
                let jail = jail_id(&id, &event_id.to_string());
                let (llm_session_id, sealed_llm_key) = match (&llm, &service) {
                    (Some((session, key)), Some((service_id, service_x25519))) => (
                        session.clone(),
                        amai_bus::seal::seal(
                            &keys.x25519_secret_bytes(),
                            &keys.x25519_public(),
                            service_x25519,
                            amai_bus::seal::MessageBinding {
                                sender: &id,
                                recipient: service_id,
                                event_id: &event_id.to_string(),
                            },
                            key.expose().as_bytes(),
                        )
                        // An unusable key is refused by the jail service
                        // (`jail.run_failed`, LLM_SESSION), never sent in clear.
                        .unwrap_or_default(),
                    ),
                    _ => (String::new(), Vec::new()),
                };
                EventDraft::new(
                    aggregate.clone(),
                    Kind::JailRequested(proto::JailRequested {
                        jail_id: jail,
                        spec_json: inline.clone(),
                        spec_sha256: digest.clone(),
                        reproduces: reproduces.to_string(),
                        run,
                        spec_blob: blob.clone(),
                        llm_session_id: llm_session_id.clone(),
                        sealed_llm_key: sealed_llm_key.clone(),
                    }),
                )
                .id(event_id)
                .after(seq, hash)
                .sign(&keys, &id)
            },
            |event| self.jail_call(rpc, event),
        )
        .await
    }

    async fn jail_call(
        &self,
        rpc: JailRpc,
        event: SignedEvent,
    ) -> Result<proto::Jail, tonic::Status> {
        let mut svc = self.client().jail_service();
        let command = proto::JailCommand { event: Some(event) };
        let resp = match rpc {
            JailRpc::Create => svc.create_jail(command).await,
            JailRpc::Reproduce { wait } => {
                let mut req = tonic::Request::new(proto::ReproduceJailRequest {
                    command: Some(command),
                    wait: wait.is_some(),
                });
                if let Some(wait) = wait {
                    req.set_timeout(wait);
                }
                svc.reproduce(req).await
            }
        };
        resp.map(tonic::Response::into_inner)
    }
}

impl AmaiClient {
    /// A jail (signed read: its owner, an operator or a reader granted `AMAI_JAILS`).
    pub async fn jail(&self, jail_id: &str) -> Result<proto::Jail, ClientError> {
        self.jail_status(jail_id, None).await
    }

    /// A jail once its run finished or failed, waiting at most `wait`; the
    /// jail as it is then otherwise.
    pub async fn wait_jail(
        &self,
        jail_id: &str,
        wait: Duration,
    ) -> Result<proto::Jail, ClientError> {
        self.jail_status(jail_id, Some(wait)).await
    }

    async fn jail_status(
        &self,
        jail_id: &str,
        wait: Option<Duration>,
    ) -> Result<proto::Jail, ClientError> {
        let mut req = self
            .signed_request(
                GET_JAIL_STATUS_METHOD,
                proto::GetJailRequest {
                    jail_id: jail_id.to_string(),
                    min_position: None,
                    wait_done: wait.is_some(),
                },
            )
            .await?;
        if let Some(wait) = wait {
            // The gateway answers a little before this deadline, with the
            // jail as it is then.
            req.set_timeout(wait + Duration::from_millis(500));
        }
        Ok(self.jail.clone().get_status(req).await?.into_inner())
    }

    /// One page of jails: `owner` empty = the signer's own (every jail for an
    /// operator).
    pub async fn jails(
        &self,
        owner: &str,
        after: &str,
        limit: u32,
        include_deleted: bool,
    ) -> Result<proto::ListJailsResponse, ClientError> {
        let req = self
            .signed_request(
                LIST_JAILS_METHOD,
                proto::ListJailsRequest {
                    owner: owner.to_string(),
                    after: after.to_string(),
                    limit,
                    include_deleted,
                },
            )
            .await?;
        Ok(self.jail.clone().list(req).await?.into_inner())
    }

    /// Runs a created jail that never ran.
    pub async fn run_jail(&self, jail_id: &str) -> Result<proto::Jail, ClientError> {
        let req = self
            .signed_request(
                RUN_JAIL_METHOD,
                proto::RunJailRequest {
                    jail_id: jail_id.to_string(),
                    requested_by: String::new(),
                },
            )
            .await?;
        Ok(self.jail.clone().run(req).await?.into_inner())
    }

    /// Deletes a jail: stops its run, removes its container, network and
    /// rules; its events and blobs stay.
    pub async fn delete_jail(
        &self,
        jail_id: &str,
        reason: &str,
    ) -> Result<proto::Jail, ClientError> {
        let req = self
            .signed_request(
                DELETE_JAIL_METHOD,
                proto::DeleteJailRequest {
                    jail_id: jail_id.to_string(),
                    reason: reason.to_string(),
                    requested_by: String::new(),
                },
            )
            .await?;
        Ok(self.jail.clone().delete(req).await?.into_inner())
    }

    /// The filesystem diff of a finished run.
    pub async fn jail_diff(&self, jail_id: &str) -> Result<proto::JailDiff, ClientError> {
        let req = self
            .signed_request(
                GET_JAIL_DIFF_METHOD,
                proto::GetJailDiffRequest {
                    jail_id: jail_id.to_string(),
                },
            )
            .await?;
        Ok(self.jail.clone().get_diff(req).await?.into_inner())
    }

    /// The network log of a finished run.
    pub async fn jail_network_log(
        &self,
        jail_id: &str,
    ) -> Result<proto::JailNetworkLog, ClientError> {
        let req = self
            .signed_request(
                GET_JAIL_NETWORK_LOG_METHOD,
                proto::GetJailNetworkLogRequest {
                    jail_id: jail_id.to_string(),
                },
            )
            .await?;
        Ok(self.jail.clone().get_network_log(req).await?.into_inner())
    }

    /// Limits, usage and duration of a finished run.
    pub async fn jail_usage(&self, jail_id: &str) -> Result<proto::JailUsageReport, ClientError> {
        let req = self
            .signed_request(
                GET_JAIL_USAGE_METHOD,
                proto::GetJailUsageRequest {
                    jail_id: jail_id.to_string(),
                },
            )
            .await?;
        Ok(self.jail.clone().get_usage(req).await?.into_inner())
    }

    /// The output of a run (`follow`: wait for a running jail to end first).
    pub async fn jail_logs(&self, jail_id: &str, follow: bool) -> Result<JailLogs, ClientError> {
        let req = self
            .signed_request(
                GET_JAIL_LOGS_METHOD,
                proto::GetJailLogsRequest {
                    jail_id: jail_id.to_string(),
                    stream: proto::JailLogStream::Both as i32,
                    follow,
                },
            )
            .await?;
        let mut stream = self.jail.clone().get_logs(req).await?.into_inner();
        let mut logs = JailLogs::default();
        while let Some(chunk) = stream.message().await? {
            match proto::JailLogStream::try_from(chunk.stream) {
                Ok(proto::JailLogStream::Stderr) => logs.stderr.extend_from_slice(&chunk.data),
                _ => logs.stdout.extend_from_slice(&chunk.data),
            }
        }
        Ok(logs)
    }
}
