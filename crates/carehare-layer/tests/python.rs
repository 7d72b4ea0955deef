//! Wire compatibility with the real Python `channels_rabbitmq`: a Python
//! layer and a Rust layer on the same broker send to each other's channels
//! and groups, both ways. The Python side is an asyncio script run as a
//! subprocess; the two sides meet through files in a temporary directory.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use carehare_layer::Layer;
use common::{unique, within};
use serde::{Deserialize, Serialize};

/// The newest `channels_rabbitmq` and the dependency versions it runs with
/// on Python 3.11. `channels` is held at 4.2.0: later releases renamed
/// `valid_channel_name`, which `channels_rabbitmq` 4.0.1 calls.
const PACKAGES: &[&str] = &[
    "channels-rabbitmq==4.0.1",
    "carehare==1.0.2",
    "pamqp==3.3.0",
    "msgpack==1.2.4",
    "channels==4.2.0",
    "asgiref==3.13.0",
    "Django==5.2.19",
    "sqlparse==0.6.1",
];

const SCRIPT: &str = r#"
import asyncio, json, os, sys, time
from channels_rabbitmq.core import RabbitmqChannelLayer

url, folder, py_group, rs_group, exchange = sys.argv[1:6]

def put(name, value):
    tmp = os.path.join(folder, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(value)
    os.rename(tmp, os.path.join(folder, name))

async def get(name, timeout=30):
    path = os.path.join(folder, name)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError("no " + name)
        await asyncio.sleep(0.05)
    with open(path) as f:
        return f.read()

async def main():
    layer = RabbitmqChannelLayer(host=url, groups_exchange=exchange)
    await layer.carehare_connection
    channel = await layer.new_channel()
    await layer.group_add(py_group, channel)
    put("py_channel", channel)

    rs_channel = await get("rs_channel")
    direct = await asyncio.wait_for(layer.receive(channel), 20)
    grouped = await asyncio.wait_for(layer.receive(channel), 20)
    expected = {
        "type": "from.rust",
        "text": "héllo ✓",
        "n": -3,
        "big": 2**40,
        "f": 1.5,
        "ok": True,
        "none": None,
        "list": [1, "two"],
        "map": {"k": "v"},
    }
    assert direct == {**expected, "via": "send"}, direct
    assert grouped == {**expected, "via": "group_send"}, grouped
    print("PY_RECEIVED", json.dumps([direct, grouped], sort_keys=True, ensure_ascii=False))

    message = {
        "type": "from.python",
        "text": "hi ü",
        "n": 2**33,
        "f": 0.25,
        "list": [1, 2, 3],
        "map": {"a": 1},
        "none": None,
    }
    await layer.send(rs_channel, {**message, "via": "send"})
    await layer.group_send(rs_group, {**message, "via": "group_send"})
    # Channels' websocket.receive carries bytes: msgpack binary.
    await layer.send(rs_channel, {"type": "websocket.receive", "bytes": b"\x00\xffbin"})
    frame = await asyncio.wait_for(layer.receive(channel), 20)
    assert frame == {"type": "websocket.send", "bytes": b"\x01\x02"}, frame
    print("PY_BYTES", repr(frame["bytes"]))
    await get("rs_done")
    await layer.close()
    print("PY_DONE")

asyncio.run(main())
"#;

#[derive(Serialize, Debug)]
struct FromRust<'a> {
    r#type: &'a str,
    text: &'a str,
    n: i32,
    big: u64,
    f: f64,
    ok: bool,
    none: Option<i32>,
    list: (u8, &'a str),
    map: HashMap<&'a str, &'a str>,
    via: &'a str,
}

#[derive(Deserialize, Debug, PartialEq)]
struct FromPython {
    r#type: String,
    text: String,
    n: i64,
    f: f64,
    list: Vec<i64>,
    map: HashMap<String, i64>,
    none: Option<String>,
    via: String,
}

fn put(dir: &Path, name: &str, value: &str) {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, value).unwrap();
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

async fn get(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    within(120, async {
        loop {
            if let Ok(value) = std::fs::read_to_string(&path) {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Re-raises the Python side's failure (its stdout and stderr).
fn python_ended_early(ended: Result<String, tokio::task::JoinError>) -> ! {
    match ended {
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        other => panic!("the Python side ended early: {other:?}"),
    }
}

fn scratch_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("layer-python"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_python_layers_talk_both_ways() {
    common::broker();
    let python = tokio::task::spawn_blocking(|| carehare_tests::python::venv("layer", PACKAGES))
        .await
        .unwrap();
    let dir = scratch_dir();
    let py_group = unique("py-group");
    let rs_group = unique("rs-group");
    // A groups exchange of the test's own, to stay out of other tests' way.
    let exchange = unique("groups-python");
    let mut script = {
        let args: Vec<String> = vec![
            common::URL.into(),
            dir.display().to_string(),
            py_group.clone(),
            rs_group.clone(),
            exchange.clone(),
        ];
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            carehare_tests::python::run_script(&python, SCRIPT, &args)
        })
    };

    let mut config = common::config();
    config.groups_exchange = exchange.clone();
    let layer = common::connected(Layer::new(config).unwrap()).await;
    let mine = layer.new_channel();
    layer.group_add(&rs_group, &mine).await.unwrap();

    let theirs = tokio::select! {
        theirs = get(&dir, "py_channel") => theirs,
        ended = &mut script => python_ended_early(ended),
    };
    let message = |via| FromRust {
        r#type: "from.rust",
        text: "héllo ✓",
        n: -3,
        big: 1 << 40,
        f: 1.5,
        ok: true,
        none: None,
        list: (1, "two"),
        map: HashMap::from([("k", "v")]),
        via,
    };
    layer.send(&theirs, &message("send")).await.unwrap();
    layer
        .group_send(&py_group, &message("group_send"))
        .await
        .unwrap();
    put(&dir, "rs_channel", &mine);

    let expected = |via: &str| FromPython {
        r#type: "from.python".into(),
        text: "hi ü".into(),
        n: 1 << 33,
        f: 0.25,
        list: vec![1, 2, 3],
        map: HashMap::from([("a".to_string(), 1)]),
        none: None,
        via: via.into(),
    };
    let direct: FromPython = tokio::select! {
        direct = within(60, layer.receive(&mine)) => direct.unwrap(),
        ended = &mut script => python_ended_early(ended),
    };
    assert_eq!(direct, expected("send"));
    let grouped: FromPython = within(60, layer.receive(&mine)).await.unwrap();
    assert_eq!(grouped, expected("group_send"));
    // Python bytes arrive as binary: a Value takes them, and a serde_bytes
    // field goes back as Python bytes.
    let received: carehare_layer::Value = within(60, layer.receive(&mine)).await.unwrap();
    assert_eq!(
        received["bytes"],
        carehare_layer::Value::Binary(b"\x00\xffbin".to_vec())
    );
    #[derive(Serialize)]
    struct Frame<'a> {
        r#type: &'a str,
        #[serde(with = "serde_bytes")]
        bytes: &'a [u8],
    }
    let frame = Frame {
        r#type: "websocket.send",
        bytes: &[1, 2],
    };
    layer.send(&theirs, &frame).await.unwrap();
    put(&dir, "rs_done", "");

    let stdout = within(60, script).await.unwrap();
    eprintln!("python:\n{stdout}");
    assert!(stdout.contains("PY_RECEIVED"), "{stdout}");
    assert!(stdout.contains("PY_BYTES b'\\x01\\x02'"), "{stdout}");
    assert!(stdout.contains("PY_DONE"), "{stdout}");
    let conn = layer.connection().await.unwrap();
    let _ = conn.exchange_delete(&exchange, false).await;
    layer.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
