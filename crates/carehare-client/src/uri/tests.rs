use std::path::PathBuf;
use std::time::Duration;

use carehare_core::Auth;

use super::*;
use crate::options::ClientCert;

fn parse(url: &str) -> ConnectOptions {
    ConnectOptions::from_url(url).unwrap_or_else(|e| panic!("{url}: {e}"))
}

fn err(url: &str) -> UrlError {
    match ConnectOptions::from_url(url) {
        Ok(opts) => panic!("{url} parsed: {opts:?}"),
        Err(e) => e,
    }
}

fn credentials(opts: &ConnectOptions) -> (&str, &str) {
    match &opts.amqp.auth {
        Auth::Plain { username, password } => (username, password),
        other => panic!("not PLAIN: {other:?}"),
    }
}

/// (url, user, password, host, port, vhost) from the spec's table,
/// with our defaults filled in where it leaves a part absent.
#[test]
fn spec_examples() {
    let cases = [
        (
            "amqp://user:pass@host:10000/vhost",
            "user",
            "pass",
            "host",
            10000,
            "vhost",
        ),
        (
            "amqp://user%61:%61pass@ho%61st:10000/v%2fhost",
            "usera",
            "apass",
            "hoast",
            10000,
            "v/host",
        ),
        ("amqp://", "guest", "guest", "localhost", 5672, "/"),
        // The spec gives the empty vhost here; we read "/" as the default.
        ("amqp://:@/", "", "", "localhost", 5672, "/"),
        ("amqp://user@", "user", "guest", "localhost", 5672, "/"),
        ("amqp://user:pass@", "user", "pass", "localhost", 5672, "/"),
        ("amqp://host", "guest", "guest", "host", 5672, "/"),
        ("amqp://:10000", "guest", "guest", "localhost", 10000, "/"),
        (
            "amqp:///vhost",
            "guest",
            "guest",
            "localhost",
            5672,
            "vhost",
        ),
        // The spec gives the empty vhost here too.
        ("amqp://host/", "guest", "guest", "host", 5672, "/"),
        ("amqp://host/%2f", "guest", "guest", "host", 5672, "/"),
        ("amqp://[::1]", "guest", "guest", "::1", 5672, "/"),
    ];
    for (url, user, password, host, port, vhost) in cases {
        let opts = parse(url);
        assert_eq!(credentials(&opts), (user, password), "{url}");
        assert_eq!(opts.host, host, "{url}");
        assert_eq!(opts.port, port, "{url}");
        assert_eq!(opts.amqp.virtual_host, vhost, "{url}");
        assert!(opts.tls.is_none(), "{url}");
    }
}

#[test]
fn defaults_match_connect_options_default() {
    let opts = parse("amqp://");
    let default = ConnectOptions::default();
    assert_eq!(opts.amqp, default.amqp);
    assert_eq!(opts.host, default.host);
    assert_eq!(opts.port, default.port);
    assert_eq!(opts.connection_timeout, default.connection_timeout);
}

#[test]
fn schemes_and_ports() {
    let opts = parse("amqp://host");
    assert_eq!((opts.port, opts.tls.is_none()), (5672, true));
    let opts = parse("amqps://host");
    assert_eq!(opts.port, 5671);
    let tls = opts.tls.unwrap();
    #[cfg(feature = "rustls")]
    assert!(tls.config.is_none());
    assert!(tls.ca_file.is_none());
    assert!(tls.client_cert.is_none() && tls.server_name.is_none());
    assert_eq!(parse("amqps://host:5999").port, 5999);
    assert_eq!(parse("AMQPS://host").port, 5671);
    assert_eq!(parse("amqp://host:").port, 5672);
    assert_eq!(parse("  amqp://host\n").host, "host");

    assert_eq!(
        err("http://host"),
        UrlError::UnsupportedScheme("http".into())
    );
    assert_eq!(
        err("http://host").to_string(),
        "invalid URL: unsupported scheme \"http\": use amqp or amqps"
    );
    assert!(matches!(err("host:5672"), UrlError::UnsupportedScheme(s) if s == "host"));
    assert!(matches!(err("localhost"), UrlError::Parse(_)));
    assert!(matches!(err(""), UrlError::Parse(_)));
    assert!(matches!(err("amqp:host"), UrlError::Parse(_)));
    assert!(matches!(err("://host"), UrlError::Parse(_)));
}

#[test]
fn bad_ports() {
    for url in [
        "amqp://h:0",
        "amqp://h:65536",
        "amqp://h:x",
        "amqp://h:+5",
        "amqp://h:-1",
    ] {
        let e = err(url);
        assert!(matches!(e, UrlError::Parse(_)), "{url}");
        assert!(e.to_string().contains("invalid port"), "{url}: {e}");
    }
}

#[test]
fn user_and_password_are_percent_decoded() {
    let opts = parse("amqp://us%2Fer:p%40ss%3Aw%2Fo%3Frd%25@host");
    assert_eq!(credentials(&opts), ("us/er", "p@ss:w/o?rd%"));
    // ':' in the password after the first one is part of it.
    assert_eq!(credentials(&parse("amqp://u:a:b@host")), ("u", "a:b"));
    // A raw '@' in the password: the last '@' ends the user info.
    assert_eq!(credentials(&parse("amqp://u:p@ss@host")), ("u", "p@ss"));
    assert_eq!(
        credentials(&parse("amqp://%C3%A9t%C3%A9:x@h")),
        ("été", "x")
    );
    assert_eq!(credentials(&parse("amqp://:secret@h")), ("", "secret"));
}

#[test]
fn hosts() {
    let opts = parse("amqp://[::1]:5673");
    assert_eq!((opts.host.as_str(), opts.port), ("::1", 5673));
    assert_eq!(parse("amqps://[2001:db8::1]/v").host, "2001:db8::1");
    assert_eq!(parse("amqp://127.0.0.1:5672").host, "127.0.0.1");
    assert_eq!(
        parse("amqp://Rabbit.Example.COM").host,
        "Rabbit.Example.COM"
    );
    assert_eq!(parse("amqp://u:p@/v").host, "localhost");

    assert!(matches!(err("amqp://[::1"), UrlError::Parse(_)));
    assert!(matches!(err("amqp://[nope]"), UrlError::Parse(_)));
    assert!(matches!(err("amqp://[::1]x"), UrlError::Parse(_)));
    assert!(err("amqp://::1").to_string().contains("brackets"));
    assert!(matches!(err("amqp://ho st"), UrlError::Parse(_)));
    assert!(matches!(err("amqp://h%zz"), UrlError::Parse(_)));
    assert!(matches!(err("amqp://h<x>"), UrlError::Parse(_)));
}

#[test]
fn vhosts() {
    assert_eq!(parse("amqp://host").amqp.virtual_host, "/");
    assert_eq!(parse("amqp://host/").amqp.virtual_host, "/");
    assert_eq!(parse("amqp://host/%2F").amqp.virtual_host, "/");
    assert_eq!(parse("amqp://host/vhost").amqp.virtual_host, "vhost");
    assert_eq!(parse("amqp://host/a%2Fb").amqp.virtual_host, "a/b");
    assert_eq!(parse("amqp://host/a%2fb").amqp.virtual_host, "a/b");
    assert_eq!(parse("amqp://host/%2Fa").amqp.virtual_host, "/a");
    assert_eq!(parse("amqp://host/caf%C3%A9").amqp.virtual_host, "café");
    assert_eq!(parse("amqp://host/v?heartbeat=5").amqp.virtual_host, "v");
    assert_eq!(parse("amqp://host?heartbeat=5").amqp.virtual_host, "/");
    assert_eq!(parse("amqp://host/?heartbeat=5").amqp.virtual_host, "/");

    let max = "v".repeat(255);
    assert_eq!(parse(&format!("amqp://h/{max}")).amqp.virtual_host, max);

    for url in [
        "amqp://host/a/b",
        "amqp://host//",
        "amqp://host/a/",
        "amqp://host/a%zz",
        "amqp://host/%ff",
        "amqp://host/%",
    ] {
        assert!(matches!(err(url), UrlError::InvalidVhost(_)), "{url}");
    }
    let too_long = format!("amqp://h/{}", "v".repeat(256));
    assert!(matches!(err(&too_long), UrlError::InvalidVhost(_)));
    assert!(err("amqp://host/a/b").to_string().contains("%2F"));
}

#[test]
fn numeric_parameters() {
    let opts = parse("amqp://h?heartbeat=5&frame_max=8192&channel_max=100&connection_timeout=2500");
    assert_eq!(opts.amqp.heartbeat, 5);
    assert_eq!(opts.amqp.frame_max, 8192);
    assert_eq!(opts.amqp.channel_max, 100);
    assert_eq!(opts.connection_timeout, Duration::from_millis(2500));

    let opts = parse("amqp://h?heartbeat=0&frame_max=0&channel_max=0");
    assert_eq!(
        (
            opts.amqp.heartbeat,
            opts.amqp.frame_max,
            opts.amqp.channel_max
        ),
        (0, 0, 0)
    );
    assert_eq!(parse("amqp://h?frame_max=4096").amqp.frame_max, 4096);
    assert_eq!(parse("amqp://h?heartbeat=65535").amqp.heartbeat, 65535);
    assert_eq!(
        parse("amqp://h?frame_max=4294967295").amqp.frame_max,
        u32::MAX
    );

    for (url, name, value) in [
        ("amqp://h?heartbeat=abc", "heartbeat", "abc"),
        ("amqp://h?heartbeat=65536", "heartbeat", "65536"),
        ("amqp://h?heartbeat=-1", "heartbeat", "-1"),
        ("amqp://h?heartbeat=", "heartbeat", ""),
        ("amqp://h?heartbeat", "heartbeat", ""),
        ("amqp://h?heartbeat=1.5", "heartbeat", "1.5"),
        ("amqp://h?heartbeat=%2B5", "heartbeat", "+5"),
        ("amqp://h?channel_max=70000", "channel_max", "70000"),
        ("amqp://h?frame_max=4095", "frame_max", "4095"),
        ("amqp://h?frame_max=1", "frame_max", "1"),
        ("amqp://h?frame_max=4294967296", "frame_max", "4294967296"),
        ("amqp://h?connection_timeout=0", "connection_timeout", "0"),
        (
            "amqp://h?connection_timeout=ten",
            "connection_timeout",
            "ten",
        ),
    ] {
        match err(url) {
            UrlError::InvalidParameter {
                name: n,
                value: v,
                reason,
            } => {
                assert_eq!((n.as_str(), v.as_str()), (name, value), "{url}");
                assert!(!reason.is_empty());
            }
            other => panic!("{url}: {other:?}"),
        }
    }
    assert_eq!(
        err("amqp://h?heartbeat=65536").to_string(),
        "invalid URL: query parameter heartbeat=\"65536\": too large (at most 65535)"
    );
}

#[test]
fn auth_mechanisms() {
    assert_eq!(
        parse("amqp://u:p@h?auth_mechanism=plain").amqp.auth,
        Auth::plain("u", "p")
    );
    assert_eq!(
        parse("amqp://u:p@h?auth_mechanism=AMQPlain").amqp.auth,
        Auth::AmqPlain {
            username: "u".into(),
            password: "p".into()
        }
    );
    assert_eq!(
        parse("amqp://h?auth_mechanism=amqplain").amqp.auth,
        Auth::AmqPlain {
            username: "guest".into(),
            password: "guest".into()
        }
    );
    assert_eq!(
        parse("amqps://h?auth_mechanism=EXTERNAL").amqp.auth,
        Auth::External
    );
    assert_eq!(
        parse("amqps://u:p@h?auth_mechanism=external").amqp.auth,
        Auth::External
    );
    assert!(matches!(
        err("amqp://h?auth_mechanism=scram-sha-256"),
        UrlError::InvalidParameter { name, .. } if name == "auth_mechanism"
    ));
}

#[test]
fn connection_name() {
    assert_eq!(
        parse("amqp://h?name=my%20app")
            .amqp
            .connection_name
            .as_deref(),
        Some("my app")
    );
    assert_eq!(
        parse("amqp://h?connection_name=a+b%2Bc%26d")
            .amqp
            .connection_name
            .as_deref(),
        Some("a b+c&d")
    );
    assert_eq!(parse("amqp://h").amqp.connection_name, None);
    assert_eq!(
        err("amqp://h?name=a&connection_name=b"),
        UrlError::DuplicateParameter("connection_name".into())
    );
}

#[test]
fn tls_parameters() {
    let opts = parse(
        "amqps://h?cacertfile=/etc/ca.pem&certfile=%2Fetc%2Fclient.pem&keyfile=/etc/client.key\
         &server_name_indication=rabbit.example&verify=verify_peer",
    );
    let tls = opts.tls.unwrap();
    assert_eq!(tls.ca_file, Some(PathBuf::from("/etc/ca.pem")));
    assert_eq!(
        tls.client_cert,
        Some(ClientCert {
            cert_file: "/etc/client.pem".into(),
            key_file: "/etc/client.key".into(),
        })
    );
    assert_eq!(tls.server_name.as_deref(), Some("rabbit.example"));
    assert_eq!(
        parse("amqps://h?server_name_indication=10.0.0.1")
            .tls
            .unwrap()
            .server_name
            .as_deref(),
        Some("10.0.0.1")
    );

    assert_eq!(
        err("amqps://h?certfile=/c.pem"),
        UrlError::IncompleteClientCert {
            present: "certfile",
            missing: "keyfile"
        }
    );
    assert_eq!(
        err("amqps://h?keyfile=/k.pem"),
        UrlError::IncompleteClientCert {
            present: "keyfile",
            missing: "certfile"
        }
    );
    for param in [
        "cacertfile",
        "certfile",
        "keyfile",
        "server_name_indication",
        "verify",
    ] {
        let url = format!("amqp://h?{param}=x");
        assert_eq!(err(&url), UrlError::TlsParamWithoutTls(param), "{url}");
    }
    assert!(
        err("amqp://h?cacertfile=/ca.pem")
            .to_string()
            .contains("amqps://")
    );
    for url in [
        "amqps://h?verify=verify_none",
        "amqps://h?server_name_indication=disable",
        "amqps://h?server_name_indication=bad%20name",
        "amqps://h?server_name_indication=",
        "amqps://h?cacertfile=",
    ] {
        assert!(
            matches!(err(url), UrlError::InvalidParameter { .. }),
            "{url}"
        );
    }
}

#[test]
fn unknown_and_repeated_parameters() {
    assert_eq!(
        err("amqp://h?heartbeet=5"),
        UrlError::UnknownParameter("heartbeet".into())
    );
    assert!(
        err("amqp://h?heartbeet=5")
            .to_string()
            .contains("\"heartbeet\"")
    );
    assert_eq!(
        err("amqp://h?Heartbeat=5"),
        UrlError::UnknownParameter("Heartbeat".into())
    );
    assert_eq!(
        err("amqp://h?heartbeat=5&heartbeat=6"),
        UrlError::DuplicateParameter("heartbeat".into())
    );
    // Empty pieces are ignored.
    assert_eq!(parse("amqp://h?&heartbeat=5&&").amqp.heartbeat, 5);
    assert_eq!(parse("amqp://h?").amqp.heartbeat, 60);
    assert!(matches!(err("amqp://h?name=%zz"), UrlError::Parse(_)));
}

#[test]
fn fragments_are_rejected() {
    assert!(matches!(err("amqp://h/v#frag"), UrlError::Parse(_)));
    assert!(matches!(err("amqp://h#"), UrlError::Parse(_)));
}

#[test]
fn from_str_matches_from_url() {
    let opts: ConnectOptions = "amqps://u:p@h:1234/v?heartbeat=7".parse().unwrap();
    assert_eq!(opts.port, 1234);
    assert_eq!(opts.amqp.heartbeat, 7);
    assert!(opts.tls.is_some());
    assert!("ftp://h".parse::<ConnectOptions>().is_err());
}

#[test]
fn passwords_never_show() {
    let opts = parse("amqp://bob:hunter2@host/v?auth_mechanism=amqplain");
    let shown = format!("{opts:?}");
    assert!(shown.contains("bob"));
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!format!("{:?}", parse("amqps://bob:hunter2@host")).contains("hunter2"));
}

/// Passwords with unencoded special characters produce errors that
/// show no part of the password.
#[test]
fn errors_never_contain_the_password() {
    for url in [
        "amqp://bob:hun/ter2@host/v",
        "amqp://bob:hun?ter2@host",
        "amqp://bob:hun#ter2@host",
        "amqp://bob:12/hunter2@host",
        "amqp://bob:12?hunter2@host",
        "amqp://bob:12#hunter2@host",
        "amqp://bob:hunter2%@host",
        "amqp://bob:hunter2%zz@host",
        "amqp://bob:hunter2%FF@host",
        "amqp://bob:hunter2@host:0",
        "amqp://bob:hunter2@host/a/b",
        "amqp://bob:hunter2@host/%zz",
        "amqp://bob:hunter2@host?heartbeat=x",
        "amqp://bob:hunter2@host?bogus=1",
        "amqp://bob:hunter2@host?heartbeat=1&heartbeat=2",
        "amqp://bob:hunter2@host?cacertfile=/x",
        "amqp://bob:hunter2@host#frag",
        "amqp://bob:hunter2@[::1",
        "amqp://bob:hunter2@ho st",
    ] {
        let e = err(url);
        for shown in [e.to_string(), format!("{e:?}")] {
            assert!(!shown.contains("hunter2"), "{url}: {shown}");
            assert!(!shown.contains("ter2"), "{url}: {shown}");
        }
    }
}

#[test]
fn from_urls_collects_every_node_in_order() {
    let options = ConnectOptions::from_urls([
        "amqp://u:p@127.0.0.1:5781/carehare-test?heartbeat=5",
        "amqp://u:p@127.0.0.1:5782/carehare-test?heartbeat=5",
        "amqp://u:p@[::1]/carehare-test?heartbeat=5",
    ])
    .unwrap();
    assert_eq!(
        options.addresses(),
        [
            crate::Address::new("127.0.0.1", 5781),
            crate::Address::new("127.0.0.1", 5782),
            crate::Address::new("::1", 5672),
        ]
    );
    assert_eq!(options.amqp.heartbeat, 5);
    assert_eq!(options.amqp.virtual_host, "carehare-test");
    assert_eq!(options.address_order, crate::AddressOrder::InOrder);
    // One URL is the same as from_url.
    let one = ConnectOptions::from_urls(vec![String::from("amqp://h:1")]).unwrap();
    assert_eq!(one.addresses(), [crate::Address::new("h", 1)]);
}

#[test]
fn from_urls_refuses_urls_that_disagree() {
    let disagree = |urls: &[&str]| match ConnectOptions::from_urls(urls) {
        Err(UrlError::ClusterUrlsDisagree { part, index }) => (part, index),
        other => panic!("{urls:?}: {other:?}"),
    };
    assert_eq!(disagree(&["amqp://a", "amqps://b"]), ("scheme", 1));
    assert_eq!(
        disagree(&["amqp://u:p@a", "amqp://u:p@b", "amqp://u:q@c"]),
        ("credentials", 2)
    );
    assert_eq!(
        disagree(&["amqp://u:p@a", "amqp://v:p@b"]),
        ("credentials", 1)
    );
    assert_eq!(disagree(&["amqp://a/x", "amqp://b/y"]), ("vhost", 1));
    assert_eq!(
        disagree(&["amqp://a/", "amqp://b/%2F", "amqp://c/x"]),
        ("vhost", 2)
    );
    assert_eq!(
        disagree(&["amqp://a?heartbeat=5", "amqp://b"]),
        ("query options", 1)
    );
    assert_eq!(
        disagree(&[
            "amqp://a?connection_timeout=5",
            "amqp://b?connection_timeout=6"
        ]),
        ("query options", 1)
    );
    assert_eq!(
        disagree(&["amqps://a?cacertfile=x.pem", "amqps://b?cacertfile=y.pem"]),
        ("query options", 1)
    );
    assert_eq!(
        disagree(&["amqp://a?auth_mechanism=amqplain", "amqp://b"]),
        ("credentials", 1)
    );
    assert_eq!(
        ConnectOptions::from_urls(Vec::<&str>::new()).unwrap_err(),
        UrlError::NoUrls
    );
    // A bad URL is that URL's own error.
    assert!(matches!(
        ConnectOptions::from_urls(["amqp://a", "http://b"]),
        Err(UrlError::UnsupportedScheme(_))
    ));
}

#[test]
fn from_urls_errors_never_show_passwords() {
    let e = ConnectOptions::from_urls(["amqp://u:hunter2@a", "amqp://u:hunter3@b"]).unwrap_err();
    assert!(!e.to_string().contains("hunter"), "{e}");
    assert!(!format!("{e:?}").contains("hunter"), "{e:?}");
}

/// The error for an unknown name lists every name, in table order.
#[test]
fn unknown_parameter_lists_every_name() {
    assert_eq!(
        err("amqp://h?heartbeet=5").to_string(),
        "invalid URL: unknown query parameter \"heartbeet\" (supported: heartbeat, frame_max, \
         channel_max, connection_timeout, auth_mechanism, name, connection_name, cacertfile, \
         certfile, keyfile, server_name_indication, verify)"
    );
}
