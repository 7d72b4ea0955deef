//! Interop with Python over the live test broker: the pika publisher and
//! pika RPC client of `amqp_worker`'s README talk to the Rust workers, and
//! the Rust client talks to an aio-pika RPC worker built as Python's
//! `amqp_worker` builds its `RPCWorker` (aio-pika's RPC pattern, gzip +
//! JSON, handlers wrapped into `{"success": ...}` responses).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use carehare_tests::python::{run_script, venv};
use carehare_worker::{CallError, Client, QueueWorker, RouteOptions, RpcError, RpcWorker};
use futures_util::future::join_all;
use support::*;

const LIMIT: Duration = Duration::from_secs(300);

/// The venv with the Python peers (made once, under `target/python/worker`).
async fn python() -> PathBuf {
    tokio::task::spawn_blocking(|| venv("worker", &["pika==1.3.2", "aio-pika==9.4.1"]))
        .await
        .unwrap()
}

async fn run_python(script: &'static str, args: Vec<String>) -> String {
    let python = python().await;
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_script(&python, script, &args)
    })
    .await
    .unwrap()
}

/// `amqp_worker`'s README's publisher, with the `{"data": ...}` envelope the
/// library expects, plus one bare value as the README shows it (which the
/// Python library rejects too: `Master.execute` wants a dict).
const PIKA_PUBLISHER: &str = r#"
import gzip
import json
import sys

import pika

queue = sys.argv[1]
credentials = pika.PlainCredentials('guest', 'guest')
connection_parameters = pika.ConnectionParameters(
    host='127.0.0.1',
    port=5672,
    credentials=credentials)
connection = pika.BlockingConnection(connection_parameters)
channel = connection.channel()
channel.confirm_delivery()

for message in ['a test message', {'a': [1, 2.5, None]}, 42, 'ünïcødé ✓']:
    channel.basic_publish(
        exchange='',
        routing_key=queue,
        body=gzip.compress(json.dumps({'data': message}).encode('UTF8')))

channel.basic_publish(
    exchange='',
    routing_key=queue,
    body=gzip.compress(json.dumps('a bare message').encode('UTF8')))
connection.close()
print('published')
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readme_pika_publisher_feeds_a_rust_queue_worker() {
    within(LIMIT, "test", async {
        let queue = unique("py-publisher");
        let dead = unique("py-publisher-dead");
        let connection = connect().await;
        declare(&connection, &dead).await;
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut worker = QueueWorker::new(params());
        let g = got.clone();
        let options = RouteOptions {
            arguments: dead_letter_to(&dead),
            ..Default::default()
        };
        worker.route_with(&queue, options, move |data: serde_json::Value| {
            let g = g.clone();
            async move { g.lock().unwrap().push(data) }
        });
        let handle = worker.run().await.expect("run");

        let out = run_python(PIKA_PUBLISHER, vec![queue.clone()]).await;
        assert!(out.contains("published"), "{out}");
        eventually(Duration::from_secs(20), "4 messages handled", || {
            got.lock().unwrap().len() == 4
        })
        .await;
        wait_for_count(&connection, &dead, 1, Duration::from_secs(20)).await;
        handle.stop().await.expect("stop");
        // Handled concurrently: compare in a fixed order.
        let mut got: Vec<String> = got
            .lock()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        got.sort();
        let mut want: Vec<String> = [
            serde_json::json!("a test message"),
            serde_json::json!({"a": [1, 2.5, null]}),
            serde_json::json!(42),
            serde_json::json!("ünïcødé ✓"),
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(message_count(&connection, &queue).await, 0);
        delete(&connection, &[&queue, &dead]).await;
    })
    .await;
}

/// `amqp_worker`'s README's blocking pika RPC client (an exclusive reply
/// queue, a correlation id per call), with a bounded wait. Prints each response
/// as a JSON line.
const PIKA_RPC_CLIENT: &str = r#"
import gzip
import json
import sys
import time
import uuid
from typing import Any

import pika


class Client:
    def __init__(self, connection, channel):
        self.connection = connection
        self.channel = channel
        result = self.channel.queue_declare(
            queue='', exclusive=True, auto_delete=True)
        self.callback_queue = result.method.queue
        self.channel.basic_consume(
            queue=self.callback_queue,
            on_message_callback=self._on_response,
            auto_ack=True)

    def _on_response(self, _, __, props, body):
        if self.correlation_id == props.correlation_id:
            self.response = json.loads(gzip.decompress(body).decode('UTF8'))

    def call(self, target_queue: str, message: Any) -> Any:
        self.response = None
        self.correlation_id = str(uuid.uuid4())
        message_props = pika.BasicProperties(
            reply_to=self.callback_queue,
            correlation_id=self.correlation_id)
        message_as_dict = {
            'data': message,
        }
        self.channel.basic_publish(
            exchange='',
            routing_key=target_queue,
            properties=message_props,
            body=gzip.compress(json.dumps(message_as_dict).encode('UTF8')))
        deadline = time.monotonic() + 30
        while self.response is None:
            if time.monotonic() > deadline:
                raise TimeoutError('no response from ' + target_queue)
            self.connection.process_data_events(time_limit=1)
        return self.response


credentials = pika.PlainCredentials('guest', 'guest')
connection_parameters = pika.ConnectionParameters(
    host='127.0.0.1',
    port=5672,
    credentials=credentials)
connection = pika.BlockingConnection(connection_parameters)
channel = connection.channel()

client = Client(connection, channel)
echo, divide = sys.argv[1], sys.argv[2]
print(json.dumps(client.call(echo, 'a message')))
print(json.dumps(client.call(echo, 'ünïcødé')))
print(json.dumps(client.call(divide, [10, 2])))
print(json.dumps(client.call(divide, [1, 0])))
print(json.dumps(client.call(divide, 'not a pair')))
connection.close()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readme_pika_rpc_client_calls_a_rust_rpc_worker() {
    within(LIMIT, "test", async {
        let echo = unique("py-echo");
        let divide = unique("py-divide");
        let mut worker = RpcWorker::new(params());
        worker
            .route(&echo, |data: String| async move {
                format!("data received {data}")
            })
            .route(&divide, |(a, b): (i64, i64)| async move {
                a.checked_div(b)
                    .ok_or_else(|| RpcError::new("ZeroDivisionError", "division by zero"))
            });
        let handle = worker.run().await.expect("run");

        let out = run_python(PIKA_RPC_CLIENT, vec![echo.clone(), divide.clone()]).await;
        let replies: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(replies.len(), 5, "{out}");
        assert_eq!(
            replies[0],
            serde_json::json!({"success": true, "data": "data received a message"})
        );
        assert_eq!(
            replies[1],
            serde_json::json!({"success": true, "data": "data received ünïcødé"})
        );
        assert_eq!(replies[2], serde_json::json!({"success": true, "data": 5}));
        assert_eq!(
            replies[3],
            serde_json::json!({"success": false, "error": {
                "type": "ZeroDivisionError",
                "message": "division by zero",
                "args": ["division by zero"],
                "trace": "",
            }})
        );
        assert_eq!(replies[4]["success"], serde_json::json!(false));
        assert_eq!(replies[4]["error"]["type"], serde_json::json!("TypeError"));

        handle.stop().await.expect("stop");
        let connection = connect().await;
        delete(&connection, &[&echo, &divide]).await;
    })
    .await;
}

/// An RPC worker as Python's `amqp_worker` builds one: aio-pika's RPC
/// pattern with a gzip + JSON serializer, each handler wrapped so that it
/// returns `{"success": true, "data": ...}` or, when it raises,
/// `{"success": false, "error": {type, message, args, trace}}`.
const AIO_PIKA_RPC_WORKER: &str = r#"
import asyncio
import gzip
import json
import sys
import traceback

import aio_pika
from aio_pika.patterns import RPC


def ok_response(data):
    return {'success': True, 'data': data}


def err_response(error):
    return {'success': False, 'error': {
        'type': error.__class__.__name__,
        'message': repr(error),
        'args': error.args,
        'trace': ''.join(traceback.format_exception(error)),
    }}


class JSONGzipRPC(RPC):
    SERIALIZER = json
    CONTENT_TYPE = 'application/octet-stream'

    def serialize(self, data):
        return gzip.compress(
            json.dumps(data, ensure_ascii=False, default=repr).encode('UTF8'))

    def serialize_exception(self, exception):
        return err_response(exception)

    def deserialize(self, data):
        return super().deserialize(gzip.decompress(data).decode('UTF8'))


def route(handler):
    async def wrapped(data):
        try:
            return ok_response(await handler(data))
        except Exception as err:
            return err_response(err)
    return wrapped


async def echo(data):
    return f'data received {data}'


async def fail(data):
    raise ValueError('bad', data)


async def main():
    prefix = sys.argv[1]
    # Retry connecting, as amqp_worker's _try_connect does (the test
    # broker may be restarting).
    for attempt in range(60):
        try:
            connection = await aio_pika.connect_robust(
                host='127.0.0.1', port=5672, login='guest', password='guest')
            break
        except ConnectionError:
            if attempt == 59:
                raise
            await asyncio.sleep(1)
    channel = await connection.channel()
    rpc = await JSONGzipRPC.create(channel)
    await rpc.register(prefix + '-echo', route(echo))
    await rpc.register(prefix + '-fail', route(fail))
    print('ready', flush=True)
    await asyncio.Future()


asyncio.run(main())
"#;

/// Kills the Python worker when the test ends, however it ends.
struct Subprocess(Child);

impl Drop for Subprocess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rust_client_calls_an_aio_pika_rpc_worker() {
    within(LIMIT, "test", async {
        let python = python().await;
        let prefix = unique("aio-pika");
        let mut child = Command::new(&python)
            .arg("-c")
            .arg(AIO_PIKA_RPC_WORKER)
            .arg(&prefix)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the Python worker");
        let stdout = child.stdout.take().expect("piped stdout");
        let worker = Subprocess(child);
        // Wait (bounded) for the worker to register its routes.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(120)))
            .await
            .unwrap();
        assert_eq!(
            ready.as_deref(),
            Ok("ready"),
            "the Python worker did not start"
        );

        let echo = format!("{prefix}-echo");
        let fail = format!("{prefix}-fail");
        let client = Client::connect(&params())
            .await
            .unwrap()
            .with_timeout(Duration::from_secs(30));
        let reply: String = client.call(&echo, "a message").await.unwrap();
        assert_eq!(reply, "data received a message");
        let calls = (0..200).map(|i| {
            let client = client.clone();
            let echo = echo.clone();
            async move {
                let reply: String = client.call(&echo, &format!("#{i}")).await.unwrap();
                assert_eq!(reply, format!("data received #{i}"));
            }
        });
        join_all(calls).await;
        match client
            .call::<_, ()>(&fail, &serde_json::json!({"n": 7}))
            .await
        {
            Err(CallError::ErrorReply(e)) => {
                assert_eq!(e.error_type, "ValueError");
                assert_eq!(e.message, "ValueError('bad', {'n': 7})");
                assert_eq!(
                    e.args,
                    vec![serde_json::json!("bad"), serde_json::json!({"n": 7})]
                );
                assert!(e.trace.contains("Traceback"), "{}", e.trace);
            }
            other => panic!("expected an error reply, got {other:?}"),
        }

        // A Rust RpcWorker declares the same queue (and rpc.dlx) the same
        // way, so both can serve one route.
        let mut rust = RpcWorker::new(params());
        rust.route(&echo, |data: String| async move {
            format!("data received {data}")
        });
        let handle = rust
            .run()
            .await
            .expect("the same declaration as aio-pika's");
        let calls = (0..50).map(|i| {
            let client = client.clone();
            let echo = echo.clone();
            async move {
                let reply: String = client.call(&echo, &i.to_string()).await.unwrap();
                assert_eq!(reply, format!("data received {i}"));
            }
        });
        join_all(calls).await;
        handle.stop().await.expect("stop");

        drop(worker);
        delete(&client.connection(), &[&echo, &fail]).await;
        client.close().await;
    })
    .await;
}
