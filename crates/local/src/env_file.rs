//! `KEY=VALUE` environment files, the format `cargo lambda watch --env-file` reads.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

/// Renders `KEY=VALUE` lines, one a line, in the given order.
///
/// Values are written verbatim: the stack's values (URLs, ARNs, table names) never contain
/// newlines, quotes or spaces, and `cargo lambda watch` does not unquote.
pub fn render<K: AsRef<str>, V: AsRef<str>>(vars: &[(K, V)]) -> String {
    let mut out = String::new();
    for (key, value) in vars {
        out.push_str(key.as_ref());
        out.push('=');
        out.push_str(value.as_ref());
        out.push('\n');
    }
    out
}

/// Writes the file atomically (temporary file, then rename), creating its directory.
pub fn write<K: AsRef<str>, V: AsRef<str>>(path: &Path, vars: &[(K, V)]) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, render(vars))?;
    std::fs::rename(&tmp, path)
}

/// Parses `KEY=VALUE` lines; blank lines and `#` comments are skipped.
pub fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Reads and parses an environment file, e.g. `.local/stack.env` written by `hikyaku-local setup`.
pub fn read(path: &Path) -> io::Result<BTreeMap<String, String>> {
    Ok(parse(&std::fs::read_to_string(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_then_parse_round_trips() {
        let vars = [("A", "1"), ("URL", "http://127.0.0.1:5000/x?y=z")];
        let parsed = parse(&render(&vars));
        assert_eq!(parsed["A"], "1");
        assert_eq!(parsed["URL"], "http://127.0.0.1:5000/x?y=z");
    }

    #[test]
    fn parse_skips_comments_and_blanks() {
        let parsed = parse("# note\n\nK = v \nbroken\n");
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed["K"], "v");
    }
}
