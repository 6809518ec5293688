//! Errors raised by domain validation. Each names the field at fault so the
//! API can hand it to the user unchanged.

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// A field of user input is invalid; `field` is a dotted path.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A connector id or version that no registered connector provides.
    #[error("unknown connector {0}")]
    UnknownConnector(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
