//! What the event source mapping makes of a function's answer: which messages it deletes.

use std::collections::BTreeSet;

use serde_json::Value;

/// How one invocation ended, from the event source mapping's point of view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Every message is deleted.
    Succeeded,
    /// The listed message ids stay on the queue; every other message is deleted.
    PartiallyFailed { failed: BTreeSet<String> },
    /// Nothing is deleted: the function errored, the invoke failed, or the response broke the
    /// partial batch response contract.
    Failed { reason: String },
}

impl BatchOutcome {
    /// The message ids of `batch` to delete.
    pub fn to_delete<'a>(&self, batch: &'a [String]) -> Vec<&'a str> {
        match self {
            Self::Succeeded => batch.iter().map(String::as_str).collect(),
            Self::PartiallyFailed { failed } => batch
                .iter()
                .filter(|id| !failed.contains(id.as_str()))
                .map(String::as_str)
                .collect(),
            Self::Failed { .. } => Vec::new(),
        }
    }
}

/// Interprets a successful invocation's payload for a batch of `message_ids`, as Lambda does
/// for an SQS event source mapping with `FunctionResponseTypes: ["ReportBatchItemFailures"]`:
///
/// - success: an empty or `null` payload, an object without `batchItemFailures`, or with an
///   empty or `null` list;
/// - partial failure: every listed `itemIdentifier` is a message id of the batch;
/// - whole-batch failure: invalid JSON, a non-object answer, an entry without a non-empty
///   string `itemIdentifier`, or an id that is not in the batch.
///
/// With `report_batch_item_failures == false` any successful invocation deletes the batch.
pub fn interpret(
    payload: &[u8],
    message_ids: &[String],
    report_batch_item_failures: bool,
) -> BatchOutcome {
    if !report_batch_item_failures || payload.iter().all(u8::is_ascii_whitespace) {
        return BatchOutcome::Succeeded;
    }
    let value: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => return failed(format!("the response is not valid JSON: {e}")),
    };
    let object = match value {
        Value::Null => return BatchOutcome::Succeeded,
        Value::Object(o) => o,
        other => {
            return failed(format!(
                "the response is not a batch response object: {other}"
            ));
        }
    };
    let items = match object.get("batchItemFailures") {
        None | Some(Value::Null) => return BatchOutcome::Succeeded,
        Some(Value::Array(items)) => items,
        Some(other) => return failed(format!("batchItemFailures is not a list: {other}")),
    };
    let mut failed_ids = BTreeSet::new();
    for item in items {
        let id = match item.get("itemIdentifier") {
            Some(Value::String(id)) if !id.is_empty() => id,
            _ => return failed(format!("invalid batch item failure {item}")),
        };
        if !message_ids.iter().any(|m| m == id) {
            return failed(format!("itemIdentifier {id} is not a message of the batch"));
        }
        failed_ids.insert(id.clone());
    }
    if failed_ids.is_empty() {
        BatchOutcome::Succeeded
    } else {
        BatchOutcome::PartiallyFailed { failed: failed_ids }
    }
}

fn failed(reason: String) -> BatchOutcome {
    BatchOutcome::Failed { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Vec<String> {
        ["a", "b", "c", "d"].map(String::from).to_vec()
    }

    fn deleted(payload: &str) -> Vec<String> {
        let batch = ids();
        interpret(payload.as_bytes(), &batch, true)
            .to_delete(&batch)
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[test]
    fn success_shapes_delete_everything() {
        for payload in [
            "",
            "  ",
            "null",
            "{}",
            r#"{"batchItemFailures":null}"#,
            r#"{"batchItemFailures":[]}"#,
            r#"{"other":1}"#,
        ] {
            assert_eq!(deleted(payload), ids(), "payload {payload:?}");
        }
    }

    #[test]
    fn reported_failures_stay_and_the_rest_is_deleted() {
        let payload = r#"{"batchItemFailures":[{"itemIdentifier":"b"},{"itemIdentifier":"d"},{"itemIdentifier":"b"}]}"#;
        assert_eq!(deleted(payload), ["a", "c"]);
        assert_eq!(
            interpret(payload.as_bytes(), &ids(), true),
            BatchOutcome::PartiallyFailed {
                failed: ["b", "d"].map(String::from).into()
            }
        );
    }

    #[test]
    fn contract_violations_fail_the_whole_batch() {
        for payload in [
            "{not json",
            r#""ok""#,
            "42",
            r#"{"batchItemFailures":{"itemIdentifier":"a"}}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":null}]}"#,
            r#"{"batchItemFailures":[{"itemId":"a"}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":"a"},{"itemIdentifier":"zz"}]}"#,
            r#"{"batchItemFailures":["a"]}"#,
        ] {
            let outcome = interpret(payload.as_bytes(), &ids(), true);
            assert!(
                matches!(outcome, BatchOutcome::Failed { .. }),
                "payload {payload:?} gave {outcome:?}"
            );
            assert!(outcome.to_delete(&ids()).is_empty());
        }
    }

    #[test]
    fn without_partial_responses_any_answer_deletes_the_batch() {
        let payload = br#"{"batchItemFailures":[{"itemIdentifier":"zz"}]}"#;
        assert_eq!(interpret(payload, &ids(), false), BatchOutcome::Succeeded);
    }
}
