//! The allow-list: which scheme, host and port a plan (and every redirect hop) may target.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use url::{Host, Url};

use super::guard::AddressClass;
use super::{truncate, EgressError};

/// The two schemes egress speaks: the scheme of an allow-list rule, and of a manifest's allowed origin
/// (serialized lowercase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(description = "URL scheme of an allowed origin.")]
pub enum Scheme {
    /// TLS. (A manifest may use no other scheme for a non-loopback host.)
    #[schemars(description = "TLS; the only scheme for non-loopback hosts.")]
    Https,
    /// Plain HTTP. (A manifest may use it for loopback hosts only.)
    #[schemars(description = "Plain HTTP; loopback hosts only.")]
    Http,
}

impl Scheme {
    /// The scheme as written in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The port a URL of this scheme uses when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    pub(super) fn parse(scheme: &str) -> Result<Scheme, EgressError> {
        match scheme {
            "http" => Ok(Scheme::Http),
            "https" => Ok(Scheme::Https),
            other => Err(EgressError::SchemeNotAllowed { scheme: truncate(other) }),
        }
    }
}

/// One allowed destination. `host` is an exact host name, a `*.example.com` wildcard (subdomains only, not
/// `example.com` itself), or an IP literal (`10.0.0.1`, `::1` or `[::1]`). `port: None` means the scheme's
/// default port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    pub scheme: Scheme,
    pub host: String,
    pub port: Option<u16>,
}

impl AllowRule {
    /// A rule; it is validated when put into an [`AllowList`].
    pub fn new(scheme: Scheme, host: impl Into<String>, port: Option<u16>) -> AllowRule {
        AllowRule { scheme, host: host.into(), port }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RuleHost {
    /// Exact name, lowercased, without a trailing dot.
    Name(String),
    /// `*.example.com`, stored as `.example.com`.
    Wildcard(String),
    Ip(IpAddr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CompiledRule {
    pub(super) scheme: Scheme,
    pub(super) host: RuleHost,
    pub(super) port: u16,
}

impl CompiledRule {
    /// Whether a resolved address of this class may be reached through this rule. IP-literal rules never
    /// reach the guard (the URL names the address itself), so only `localhost` earns an exemption here.
    pub(super) fn permits(&self, class: AddressClass) -> bool {
        matches!((&self.host, class), (RuleHost::Name(name), AddressClass::Loopback) if name == "localhost")
    }
}

/// The destinations a publication may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    rules: Vec<AllowRule>,
    compiled: Vec<CompiledRule>,
}

impl AllowList {
    /// Validates and normalises every rule: hosts are lowercased (IDNA), wildcards must be `*.` followed by a
    /// name with at least one dot (`*.com` is refused), and no other `*` may appear.
    pub fn new(rules: Vec<AllowRule>) -> Result<AllowList, EgressError> {
        let compiled = rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                let host = compile_rule_host(&rule.host)
                    .map_err(|reason| EgressError::InvalidAllowRule { index, reason: reason.to_string() })?;
                Ok(CompiledRule { scheme: rule.scheme, host, port: rule.port.unwrap_or(rule.scheme.default_port()) })
            })
            .collect::<Result<Vec<_>, EgressError>>()?;
        Ok(AllowList { rules, compiled })
    }

    /// The rules as given.
    pub fn rules(&self) -> &[AllowRule] {
        &self.rules
    }

    /// Checks a URL against the list: http(s) only, no userinfo, and a rule matching scheme, host and port.
    /// (The resolution guard runs at execution time, on every hop.)
    pub fn check(&self, url: &Url) -> Result<(), EgressError> {
        self.matching_rule(url).map(|_| ())
    }

    pub(super) fn matching_rule(&self, url: &Url) -> Result<&CompiledRule, EgressError> {
        let scheme = Scheme::parse(url.scheme())?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EgressError::UserinfoNotAllowed);
        }
        let host = url.host().ok_or_else(|| EgressError::InvalidUrl { reason: "the URL has no host".into() })?;
        let port = url.port().unwrap_or(scheme.default_port());
        let found = self.compiled.iter().find(|rule| {
            rule.scheme == scheme
                && rule.port == port
                && match (&rule.host, &host) {
                    (RuleHost::Name(name), Host::Domain(domain)) => name == trim_dot(domain),
                    (RuleHost::Wildcard(suffix), Host::Domain(domain)) => {
                        let domain = trim_dot(domain);
                        domain.len() > suffix.len() && domain.ends_with(suffix.as_str())
                    }
                    (RuleHost::Ip(ip), Host::Ipv4(v4)) => *ip == IpAddr::V4(*v4),
                    (RuleHost::Ip(ip), Host::Ipv6(v6)) => *ip == IpAddr::V6(*v6),
                    _ => false,
                }
        });
        found.ok_or_else(|| EgressError::HostNotAllowed {
            scheme: scheme.as_str().to_string(),
            host: truncate(&host.to_string()),
            port,
        })
    }
}

fn compile_rule_host(raw: &str) -> Result<RuleHost, &'static str> {
    if raw.is_empty() {
        return Err("the host is empty");
    }
    if let Some(suffix) = raw.strip_prefix("*.") {
        if suffix.contains('*') {
            return Err("a wildcard may only be a leading `*.`");
        }
        return match Host::parse(suffix) {
            Ok(Host::Domain(domain)) => {
                let domain = trim_dot(&domain);
                if !domain.contains('.') {
                    Err("a wildcard must cover subdomains of a name with at least two labels (not `*.com`)")
                } else {
                    Ok(RuleHost::Wildcard(format!(".{domain}")))
                }
            }
            Ok(_) => Err("a wildcard cannot cover IP addresses"),
            Err(_) => Err("the host after `*.` is not a valid host name"),
        };
    }
    if raw.contains('*') {
        return Err("a wildcard may only be a leading `*.`");
    }
    let unbracketed = raw.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).unwrap_or(raw);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(RuleHost::Ip(ip));
    }
    match Host::parse(raw) {
        Ok(Host::Domain(domain)) => Ok(RuleHost::Name(trim_dot(&domain).to_string())),
        Ok(Host::Ipv4(v4)) => Ok(RuleHost::Ip(IpAddr::V4(v4))),
        Ok(Host::Ipv6(v6)) => Ok(RuleHost::Ip(IpAddr::V6(v6))),
        Err(_) => Err("the host is not a valid host name or IP literal"),
    }
}

fn trim_dot(domain: &str) -> &str {
    domain.strip_suffix('.').unwrap_or(domain)
}
