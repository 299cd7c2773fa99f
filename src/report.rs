//! Errors as people read them: an error and every cause under it, on one line.
//!
//! Errors in every layer keep their cause as `#[source]` instead of flattening it into a string;
//! edges that print or answer an error (the CLI, problem documents, logs) show the whole chain with
//! [`ErrorChain`].

use std::fmt;

/// Displays `error: cause: cause…`, skipping a cause whose text its parent already ends with (an
/// `#[error(transparent)]` or `"…: {0}"` wrapper would otherwise say it twice).
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'a));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut said = self.0.to_string();
        f.write_str(&said)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            if !said.ends_with(&text) {
                write!(f, ": {text}")?;
                said = text;
            }
            next = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the record cannot be written")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_are_shown_once_each() {
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(ErrorChain(&e).to_string(), "the record cannot be written: disk full");
        let flat = std::io::Error::other("disk full");
        assert_eq!(ErrorChain(&flat).to_string(), "disk full");
    }
}
