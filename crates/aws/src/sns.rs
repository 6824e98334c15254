//! SNS, read by the preflight check: the feedback topic's subscriptions.

use aws_sdk_sns::Client;
use aws_sdk_sns::operation::list_subscriptions_by_topic::ListSubscriptionsByTopicError;
use hikyaku_core::doctor::{Probe, Subscription};

use crate::error::probe_failure;

/// The subscriptions of a topic.
#[derive(Clone, Debug)]
pub struct SnsTopics {
    client: Client,
}

impl SnsTopics {
    /// The IAM actions of the AWS operations this adapter calls, for the deployment's policies.
    /// `OPERATIONS` is kept true by a test that reads this module's source.
    pub const OPERATIONS: &[&str] = &["sns:ListSubscriptionsByTopic"];

    pub fn new(client: Client) -> SnsTopics {
        SnsTopics { client }
    }

    /// Every subscription of `topic_arn`, page by page.
    pub async fn subscriptions(&self, topic_arn: &str) -> Probe<Vec<Subscription>> {
        let mut found = Vec::new();
        let mut next = None;
        loop {
            let answer = self
                .client
                .list_subscriptions_by_topic()
                .topic_arn(topic_arn)
                .set_next_token(next.take())
                .send()
                .await;
            let output = match answer {
                Ok(output) => output,
                Err(err) => {
                    return probe_failure(err, |e| {
                        matches!(e, ListSubscriptionsByTopicError::NotFoundException(_))
                    });
                }
            };
            found.extend(output.subscriptions().iter().map(|s| Subscription {
                protocol: s.protocol().unwrap_or_default().to_owned(),
                endpoint: s.endpoint().unwrap_or_default().to_owned(),
            }));
            match output.next_token() {
                Some(token) if !token.is_empty() => next = Some(token.to_owned()),
                _ => return Probe::Found(found),
            }
        }
    }
}
