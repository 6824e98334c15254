//! What a command reports when it fails: the problem, and what the operator can do about it.

use std::fmt;

use hikyaku_core::ports::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }

    /// A storage call that failed; the hint depends on whether trying again may help.
    pub fn store(err: StoreError) -> CliError {
        let hint = if err.retryable {
            "the store is busy or unreachable right now; run the command again"
        } else {
            "check the HIKYAKU_*_TABLE variables, the AWS credentials and region, and the \
             endpoint (locally: `make local-up`, then load .local/stack.env)"
        };
        CliError::new(err.to_string()).hint(hint)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl From<StoreError> for CliError {
    fn from(err: StoreError) -> Self {
        CliError::store(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_prints_its_hint_on_its_own_line() {
        let err = CliError::new("list 'x' has no contacts").hint("import contacts first");
        assert_eq!(
            err.to_string(),
            "error: list 'x' has no contacts\n  hint: import contacts first"
        );
        assert_eq!(CliError::new("boom").to_string(), "error: boom");
    }

    #[test]
    fn store_errors_say_whether_to_retry() {
        let busy = CliError::store(StoreError::new("put contacts", "throttled", true));
        assert!(busy.message.contains("put contacts failed: throttled"));
        assert!(busy.hint.unwrap().contains("again"));
        let broken = CliError::store(StoreError::new("get campaign", "no such table", false));
        assert!(broken.hint.unwrap().contains("HIKYAKU_*_TABLE"));
    }
}
