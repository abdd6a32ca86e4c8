//! The shared cache's background tasks: the first connection, the subscription to both
//! channels, and the renewal of a lease while its holder signs in.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use redis::RedisResult;
use redis::aio::ConnectionManagerConfig;

use super::{CHANNEL_INVALIDATE, CHANNEL_PUBLISHED, COMPARE_AND_EXTEND, Inner};

/// Makes the first connection, retrying with backoff; the connection manager reconnects by
/// itself after that.
pub(super) async fn connect_loop(inner: Weak<Inner>, client: redis::Client) {
    let mut delay = Duration::from_millis(50);
    let mut warned = false;
    loop {
        let Some(i) = inner.upgrade() else { return };
        let op = i.config.operation_timeout;
        drop(i);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(op.max(Duration::from_millis(500))))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        match tokio::time::timeout(
            Duration::from_secs(3),
            client.get_connection_manager_with_config(config),
        )
        .await
        {
            Ok(Ok(m)) => {
                if let Some(i) = inner.upgrade() {
                    i.conn.store(Some(Arc::new(m)));
                    tracing::info!("connected to Redis; the cache is shared");
                }
                return;
            }
            Ok(Err(e)) if !warned => {
                warned = true;
                tracing::warn!(error = %e, "cannot reach Redis yet; serving from this replica's cache alone and retrying");
            }
            Err(_) if !warned => {
                warned = true;
                tracing::warn!(
                    "connecting to Redis timed out; serving from this replica's cache alone and retrying"
                );
            }
            _ => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Listens on both channels, reconnecting with backoff whenever the subscription drops.
pub(super) async fn subscribe_loop(inner: Weak<Inner>, client: redis::Client) {
    let mut delay = Duration::from_millis(50);
    loop {
        if inner.strong_count() == 0 {
            return;
        }
        let subscribed = tokio::time::timeout(Duration::from_secs(2), async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&[
                CHANNEL_PUBLISHED,
                CHANNEL_INVALIDATE,
                super::admin::CHANNEL_REVOKE,
                super::admin::CHANNEL_REVOKE_ACK,
            ])
            .await?;
            RedisResult::Ok(ps)
        })
        .await;
        if let Ok(Ok(ps)) = subscribed {
            delay = Duration::from_millis(50);
            let mut messages = ps.into_on_message();
            while let Some(msg) = messages.next().await {
                let Some(i) = inner.upgrade() else { return };
                i.on_message(msg.get_channel_name(), msg.get_payload_bytes());
                i.on_admin_message(msg.get_channel_name(), msg.get_payload_bytes());
            }
            tracing::debug!("Redis subscription ended; resubscribing");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Keeps a lease alive while its holder signs in: every third of its lifetime.
pub(super) async fn renew_loop(inner: Weak<Inner>, lease: String, fence: String) {
    let Some(ttl) = inner.upgrade().map(|i| i.config.lease_ttl) else {
        return;
    };
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    loop {
        tokio::time::sleep(ttl / 3).await;
        let Some(i) = inner.upgrade() else { return };
        let (lease, fence) = (lease.clone(), fence.clone());
        let _: Result<i64, ()> = i
            .run("renew", |mut c| async move {
                redis::cmd("EVAL")
                    .arg(COMPARE_AND_EXTEND)
                    .arg(1)
                    .arg(lease)
                    .arg(fence)
                    .arg(ms)
                    .query_async(&mut c)
                    .await
            })
            .await;
    }
}
