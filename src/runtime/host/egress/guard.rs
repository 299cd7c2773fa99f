//! The resolution guard: the special-purpose address classes, the resolver it checks, and the HTTP
//! client's resolver that refuses every name the guard did not pin.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{truncate, BoxFuture};

/// Why an address is refused by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    Unspecified,
    Loopback,
    Private,
    LinkLocal,
    CloudMetadata,
    SharedCgnat,
    Multicast,
    Documentation,
    Reserved,
}

impl std::fmt::Display for AddressClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AddressClass::Unspecified => "unspecified",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link-local",
            AddressClass::CloudMetadata => "cloud metadata",
            AddressClass::SharedCgnat => "shared (carrier-grade NAT)",
            AddressClass::Multicast => "multicast",
            AddressClass::Documentation => "documentation",
            AddressClass::Reserved => "reserved",
        })
    }
}

/// The special-purpose class of an address, or `None` for an ordinary public address. IPv4 addresses
/// embedded in IPv6 (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`) are judged as
/// the IPv4 address they reach.
pub fn address_class(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<AddressClass> {
    Some(match ip.octets() {
        [0, ..] => AddressClass::Unspecified,
        [127, ..] => AddressClass::Loopback,
        [10, ..] | [172, 16..=31, ..] | [192, 168, ..] => AddressClass::Private,
        [169, 254, 169, 254] => AddressClass::CloudMetadata,
        [169, 254, ..] => AddressClass::LinkLocal,
        [100, 64..=127, ..] => AddressClass::SharedCgnat,
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => AddressClass::Documentation,
        [192, 0, 0, _] | [198, 18..=19, ..] => AddressClass::Reserved,
        [224..=239, ..] => AddressClass::Multicast,
        [240..=255, ..] => AddressClass::Reserved,
        _ => return None,
    })
}

fn v6_class(ip: Ipv6Addr) -> Option<AddressClass> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_class(v4);
    }
    let segments = ip.segments();
    if ip.is_unspecified() {
        return Some(AddressClass::Unspecified);
    }
    if ip.is_loopback() {
        return Some(AddressClass::Loopback);
    }
    let octets = ip.octets();
    let embedded_v4 = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    // NAT64's well-known prefix reaches the IPv4 address it carries; judge that address.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_class(embedded_v4);
    }
    // IPv4-compatible addresses (`::a.b.c.d`) are deprecated: never a legitimate destination.
    if segments[..6] == [0, 0, 0, 0, 0, 0] {
        return Some(v4_class(embedded_v4).unwrap_or(AddressClass::Reserved));
    }
    // AWS's IPv6 instance metadata endpoint, inside fd00::/8.
    if segments == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254] {
        return Some(AddressClass::CloudMetadata);
    }
    match segments[0] {
        s if s & 0xfe00 == 0xfc00 => Some(AddressClass::Private),
        s if s & 0xffc0 == 0xfe80 => Some(AddressClass::LinkLocal),
        s if s & 0xffc0 == 0xfec0 => Some(AddressClass::Reserved),
        s if s & 0xff00 == 0xff00 => Some(AddressClass::Multicast),
        0x2001 if segments[1] == 0x0db8 => Some(AddressClass::Documentation),
        _ => None,
    }
}

/// Resolves host names for the guard. The executor connects to exactly the addresses this returns (after
/// the guard accepted them), never to a second resolution.
pub trait HostResolver: Send + Sync {
    fn lookup<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, std::io::Result<Vec<SocketAddr>>>;
}

/// The operating system's resolver, through `tokio::net::lookup_host`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl HostResolver for SystemResolver {
    fn lookup<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, std::io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// The HTTP client's own resolver: refuses every name, so a request can only reach the addresses pinned
/// with `resolve_to_addrs` after the guard checked them.
pub(super) struct PinnedOnly;

impl reqwest::dns::Resolve for PinnedOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let message = format!("`{}` was not resolved through the egress guard", truncate(name.as_str()));
        Box::pin(async move { Err(message.into()) })
    }
}
