use async_nats::connection::State;

use super::{CheckFuture, ReadinessCheck};

/// NATS is connected and JetStream answers an account-info request
/// (a server without JetStream answers with an error, or not at all).
#[derive(Debug, Clone)]
pub struct NatsJetStreamCheck {
    client: async_nats::Client,
}

impl NatsJetStreamCheck {
    pub fn new(client: async_nats::Client) -> Self {
        Self { client }
    }
}

impl ReadinessCheck for NatsJetStreamCheck {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            if self.client.connection_state() != State::Connected {
                return Err("not connected to NATS".into());
            }
            // The raw account-info request: the typed `query_account` expects the
            // newest server's reply shape, and readiness only needs an answer.
            let reply = self
                .client
                .request("$JS.API.INFO", bytes::Bytes::new())
                .await?;
            let info: serde_json::Value = serde_json::from_slice(&reply.payload)?;
            match info.get("error") {
                None => Ok(()),
                Some(error) => Err(format!("JetStream refused: {error}").into()),
            }
        })
    }
}
