//! Invoking a Lambda function synchronously: the port `campaign start` uses, so its logic is
//! tested without AWS.

use async_trait::async_trait;
use hikyaku_aws::FunctionInvoker;

#[async_trait]
pub trait FunctionInvoke: Send + Sync {
    /// Invokes `function` with `payload` and waits for its answer. `Err` carries the reason:
    /// the function failed, or could not be reached.
    async fn invoke(
        &self,
        function: &str,
        payload: &serde_json::Value,
    ) -> Result<serde_json::Value, String>;
}

#[async_trait]
impl FunctionInvoke for FunctionInvoker {
    async fn invoke(
        &self,
        function: &str,
        payload: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        FunctionInvoker::invoke(self, function, payload)
            .await
            .map_err(|err| err.to_string())
    }
}
