//! What OTLP/HTTP needs from the shared transport (`alumet_delivery::http`):
//! the request (URL, content type, headers that are secrets) and the
//! reading of a 2xx response's `partial_success`.

use alumet_delivery::{HttpTarget, PartialRejection, Secret};
use prost::Message;

use crate::encode::BodyFormat;
use crate::json;
use crate::proto::ExportMetricsServiceResponse;

/// The request every batch is posted with.
pub fn http_target(
    endpoint: &str,
    format: BodyFormat,
    headers: Vec<(String, Secret)>,
) -> HttpTarget {
    HttpTarget {
        url: endpoint.to_owned(),
        content_type: format.content_type(),
        secrets: headers.iter().map(|(_, v)| v.clone()).collect(),
        headers,
        error_header: None,
        user_agent: concat!("alumet-opentelemetry/", env!("CARGO_PKG_VERSION")).to_owned(),
        inspect_success: Some(partial_success),
    }
}

/// Points refused inside an accepted export (`ExportMetricsServiceResponse.partial_success`).
/// The body is protobuf or JSON, as its `Content-Type` says.
pub fn partial_success(content_type: &str, body: &[u8]) -> Option<PartialRejection> {
    if body.is_empty() {
        return None;
    }
    let (rejected, message) = if content_type.starts_with("application/json") {
        json::read_partial_success(body)?
    } else {
        let partial = ExportMetricsServiceResponse::decode(body)
            .ok()?
            .partial_success?;
        (partial.rejected_data_points, partial.error_message)
    };
    if rejected <= 0 {
        if !message.is_empty() {
            log::warn!(
                "opentelemetry: the receiver accepted every point with a warning: {message}"
            );
        }
        return None;
    }
    Some(PartialRejection {
        points: usize::try_from(rejected).unwrap_or(usize::MAX),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ExportMetricsPartialSuccess;

    #[test]
    fn partial_successes_are_read_from_protobuf_and_json() {
        let response = ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points: 3,
                error_message: "bad".into(),
            }),
        };
        let p = partial_success("application/x-protobuf", &response.encode_to_vec()).unwrap();
        assert_eq!((p.points, p.message.as_str()), (3, "bad"));
        let json = br#"{"partialSuccess":{"rejectedDataPoints":"2","errorMessage":"x"}}"#;
        assert_eq!(partial_success("application/json", json).unwrap().points, 2);
        assert_eq!(partial_success("application/x-protobuf", b""), None);
        let full = ExportMetricsServiceResponse::default().encode_to_vec();
        assert_eq!(partial_success("application/x-protobuf", &full), None);
        assert_eq!(
            partial_success("application/x-protobuf", b"\xff\xff garbage"),
            None
        );
    }
}
