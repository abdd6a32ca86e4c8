//! The two body formats Tableau's REST API speaks.

/// The wire format of a request or response body. Both carry the same data; JSON exists because
/// some deployments (gateways, WAF rules) only let one through. One definition for the broker's
/// configuration, its Tableau client and the double.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `application/xml`, Tableau's native format.
    #[default]
    Xml,
    /// `application/json`.
    Json,
}
