//! RPC over direct reply-to, on tokio: a server answers on a queue, a
//! client calls it ten times concurrently, each reply finds its own call.
//!
//! `cargo run -p carehare-examples --bin direct-reply-to`

use std::time::Duration;

use carehare_tokio::{BasicProperties, Error, QueueOptions};

fn main() -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let url = carehare_examples::url();
        // The server: uppercases each request and answers to its reply_to.
        let server = carehare_tokio::connect(&url).await?;
        let requests = server
            .queue_declare("", QueueOptions::exclusive())
            .await?
            .queue;
        let consumer = server.acking_consumer(&requests, 10).await?;
        let replier = server.clone();
        tokio::spawn(async move {
            while let Ok(request) = consumer.next().await {
                let reply = BasicProperties {
                    correlation_id: request.properties.correlation_id.clone(),
                    ..Default::default()
                };
                let to = request.properties.reply_to.clone().unwrap_or_default();
                let answer = String::from_utf8_lossy(&request.body).to_uppercase();
                if let Err(e) = replier.publish_with(answer, "", &to, &reply).await {
                    eprintln!("reply failed: {e}");
                }
                consumer.ack(request.delivery_tag);
            }
        });

        // The client.
        let client = carehare_tokio::connect(&url).await?;
        let rpc = client.direct_reply_to().await?;
        let calls = (0..10).map(|i| {
            let rpc = &rpc;
            let requests = requests.clone();
            async move {
                let body = format!("request {i}");
                let reply = rpc
                    .call(
                        "",
                        &requests,
                        body.clone(),
                        &Default::default(),
                        Duration::from_secs(5),
                    )
                    .await?;
                println!("{body} -> {}", String::from_utf8_lossy(&reply.body));
                Ok::<(), Error>(())
            }
        });
        for result in futures_util::future::join_all(calls).await {
            result?;
        }
        client.close().await?;
        server.close().await
    })
}
