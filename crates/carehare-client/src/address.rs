//! Broker addresses, and the order in which `connect` tries them.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// One broker address: a host name or IP address, and a TCP port.
///
/// Displays as `host:port`, with an IPv6 address in brackets.
///
/// ```
/// use carehare_client::Address;
/// assert_eq!(Address::new("rabbit-1", 5672).to_string(), "rabbit-1:5672");
/// assert_eq!(Address::new("::1", 5672).to_string(), "[::1]:5672");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    /// Host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Address {
    /// An address from a host and a port.
    ///
    /// ```
    /// let address = carehare_client::Address::new("127.0.0.1", 5781);
    /// assert_eq!((address.host.as_str(), address.port), ("127.0.0.1", 5781));
    /// ```
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// The socket address when `host` is an IP address: no name resolution
    /// needed.
    pub(crate) fn ip_literal(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The order in which [`connect`](crate::connect_with_runtime) tries the
/// addresses of [`ConnectOptions`](crate::ConnectOptions).
///
/// ```
/// use carehare_client::{AddressOrder, ConnectOptions};
/// let mut options = ConnectOptions::from_urls(["amqp://rabbit-1", "amqp://rabbit-2", "amqp://rabbit-3"])?;
/// // Spread a fleet of clients over the cluster's nodes.
/// options.address_order = AddressOrder::Shuffled;
/// # Ok::<(), carehare_client::UrlError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressOrder {
    /// In the order given; the IP addresses a host name resolves to in the
    /// order the resolver returns them.
    #[default]
    InOrder,
    /// A random order on every connect, for the addresses and for the IP
    /// addresses each host name resolves to.
    Shuffled,
}

impl AddressOrder {
    /// Puts `items` into this order.
    pub(crate) fn arrange<T>(self, items: &mut [T]) {
        match self {
            AddressOrder::InOrder => {}
            AddressOrder::Shuffled => fastrand::shuffle(items),
        }
    }
}

/// How long one attempt may take: `address_timeout`, but never past the
/// overall deadline; and the last candidate gets all that is left, so a
/// single address has the whole `connection_timeout`, as before there were
/// several.
pub(crate) fn attempt_limit(
    address_timeout: Duration,
    remaining: Duration,
    last: bool,
) -> Duration {
    if last {
        remaining
    } else {
        address_timeout.min(remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_brackets_ipv6_only() {
        assert_eq!(Address::new("10.0.0.1", 1).to_string(), "10.0.0.1:1");
        assert_eq!(Address::new("fe80::1", 5672).to_string(), "[fe80::1]:5672");
        assert_eq!(
            Address::new("rabbit.example.com", 5671).to_string(),
            "rabbit.example.com:5671"
        );
    }

    #[test]
    fn ip_literals_skip_resolution() {
        assert_eq!(
            Address::new("127.0.0.1", 5781).ip_literal(),
            Some("127.0.0.1:5781".parse().unwrap())
        );
        assert_eq!(
            Address::new("::1", 5672).ip_literal(),
            Some("[::1]:5672".parse().unwrap())
        );
        assert_eq!(Address::new("localhost", 5672).ip_literal(), None);
    }

    #[test]
    fn in_order_keeps_the_order() {
        let mut items: Vec<u32> = (0..20).collect();
        AddressOrder::InOrder.arrange(&mut items);
        assert_eq!(items, (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn shuffled_is_a_permutation_and_varies() {
        let mut orders = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut items: Vec<u32> = (0..6).collect();
            AddressOrder::Shuffled.arrange(&mut items);
            let mut sorted = items.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..6).collect::<Vec<_>>());
            orders.insert(items);
        }
        // 50 shuffles of 720 possible orders: all equal has odds of 720^-49.
        assert!(orders.len() > 1);
    }

    #[test]
    fn the_last_candidate_gets_what_is_left() {
        let s = Duration::from_secs;
        assert_eq!(attempt_limit(s(10), s(30), false), s(10));
        assert_eq!(attempt_limit(s(10), s(4), false), s(4));
        assert_eq!(attempt_limit(s(10), s(30), true), s(30));
        assert_eq!(attempt_limit(s(10), s(0), true), s(0));
    }
}
