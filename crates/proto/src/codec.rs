//! [`AmaiCodec`]: tonic's prost codec, except that a message that does not decode
//! is `INVALID_ARGUMENT` (the sender's fault, fix the bytes) instead of tonic's
//! `INTERNAL`. Every generated client and server uses it (`codec_path` in
//! `build.rs`).
//!
//! The status carries a `google.rpc.ErrorInfo` with reason
//! [`UNDECODABLE_MESSAGE_REASON`] in the [`ERROR_DOMAIN`] domain. On a client
//! the same status means the server's reply did not decode (a version mismatch
//! between client and server).

use std::collections::HashMap;

use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every error Amai returns.
pub const ERROR_DOMAIN: &str = "amai.dev";
/// `ErrorInfo.reason` of a message that is not a valid protobuf encoding of its type.
pub const UNDECODABLE_MESSAGE_REASON: &str = "UNDECODABLE_MESSAGE";

/// A prost codec whose decode failures are `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct AmaiCodec<T, U> {
    inner: ProstCodec<T, U>,
}

impl<T, U> Default for AmaiCodec<T, U> {
    fn default() -> Self {
        Self {
            inner: ProstCodec::default(),
        }
    }
}

impl<T, U> Codec for AmaiCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = AmaiDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        AmaiDecoder {
            inner: self.inner.decoder(),
        }
    }
}

/// Decodes `U` with prost; a failure is `INVALID_ARGUMENT` naming the type.
#[derive(Debug, Clone)]
pub struct AmaiDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: prost::Message + Default> Decoder for AmaiDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner
            .decode(buf)
            .map_err(|e| undecodable(short_type_name::<U>(), e.message()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}

/// The status of a message of type `amai.v1.<type_name>` that did not decode.
pub fn undecodable(type_name: &str, detail: &str) -> Status {
    let mut metadata = HashMap::new();
    metadata.insert("message_type".to_string(), format!("amai.v1.{type_name}"));
    Status::with_error_details(
        Code::InvalidArgument,
        format!(
            "the message is not a valid protobuf encoding of amai.v1.{type_name} ({detail}); \
             send that message type as defined in proto/amai/v1"
        ),
        ErrorDetails::with_error_info(UNDECODABLE_MESSAGE_REASON, ERROR_DOMAIN, metadata),
    )
}

/// `amai_proto::v1::GetIdentityRequest` -> `GetIdentityRequest`.
fn short_type_name<U>() -> &'static str {
    let full = std::any::type_name::<U>();
    // Generic parameters never occur in generated message types.
    full.rsplit("::").next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_invalid_argument_with_a_reason() {
        let status = undecodable(short_type_name::<crate::v1::GetIdentityRequest>(), "x");
        assert_eq!(status.code(), Code::InvalidArgument);
        let info = status.get_details_error_info().expect("error info");
        assert_eq!(info.reason, UNDECODABLE_MESSAGE_REASON);
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(
            info.metadata.get("message_type").map(String::as_str),
            Some("amai.v1.GetIdentityRequest")
        );
    }
}
