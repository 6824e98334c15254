//! How addresses appear in logs: masked unless the operator's setting says otherwise. The
//! setting is process-wide because it is read once at cold start and every log line obeys it.

use std::sync::OnceLock;

use crate::email::EmailAddress;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AddressDisplay {
    #[default]
    Masked,
    Full,
}

impl AddressDisplay {
    /// `HIKYAKU_LOG_ADDRESSES`: `masked` (default) or `full`.
    pub fn parse(value: &str) -> Result<AddressDisplay, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "masked" => Ok(AddressDisplay::Masked),
            "full" => Ok(AddressDisplay::Full),
            other => Err(format!("'{other}' is not one of: masked, full")),
        }
    }
}

static DISPLAY: OnceLock<AddressDisplay> = OnceLock::new();

/// Set once at start; later calls are ignored so a test cannot flip another's setting.
pub fn set_address_display(display: AddressDisplay) {
    let _ = DISPLAY.set(display);
}

/// The address as logs may show it.
pub fn shown(email: &EmailAddress) -> String {
    match DISPLAY.get().copied().unwrap_or_default() {
        AddressDisplay::Masked => email.masked(),
        AddressDisplay::Full => email.as_str().to_owned(),
    }
}

/// Text that should be an address but may not parse, as logs may show it: masked like an
/// address (first character and domain) unless the setting says otherwise.
pub fn shown_text(text: &str) -> String {
    if DISPLAY.get().copied().unwrap_or_default() == AddressDisplay::Full {
        return text.to_owned();
    }
    let first = text.chars().next().filter(|c| *c != '@').unwrap_or('*');
    match text.rsplit_once('@') {
        Some((_, domain)) => format!("{first}***@{domain}"),
        None => format!("{first}***"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_values_are_named_in_errors() {
        assert_eq!(AddressDisplay::parse("FULL"), Ok(AddressDisplay::Full));
        assert_eq!(AddressDisplay::parse(""), Ok(AddressDisplay::Masked));
        assert!(AddressDisplay::parse("yes").unwrap_err().contains("'yes'"));
    }

    #[test]
    fn unparsed_addresses_are_masked_too() {
        assert_eq!(shown_text("aiko@example.com"), "a***@example.com");
        assert_eq!(shown_text("not an address"), "n***");
        assert_eq!(shown_text(""), "****");
    }
}
