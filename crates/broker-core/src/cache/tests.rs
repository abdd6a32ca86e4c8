//! Unit tests of `cache`.
use super::*;
use crate::clock::{Clock, ManualClock, system};
use std::sync::atomic::{AtomicUsize, Ordering};

fn key(user: &str) -> CacheKey {
    CacheKey {
        site: Arc::from("s"),
        user: Arc::from(user),
        scopes: Arc::from(vec!["tableau:content:read".parse::<Scope>().unwrap()]),
        claims: Arc::default(),
    }
}

fn creds(key: &CacheKey, expires_at: SystemTime) -> Credentials {
    creds_with(key, expires_at, "t")
}

fn creds_with(key: &CacheKey, expires_at: SystemTime, token: &str) -> Credentials {
    let token = SecretString::from(token.to_owned());
    Credentials {
        key: key.clone(),
        digest: FP.with(|fp| fp.digest(&token)),
        token,
        site_luid: Arc::from("9a8b7c6d-0000-4000-8000-000000000001"),
        site_content_url: Arc::from("finance"),
        server_url: Arc::from("https://tableau.example.com"),
        content_url: Arc::from("c"),
        client_id: Arc::from("cid"),
        user_luid: String::from("u-1").into(),
        jti: uuid::Uuid::new_v4(),
        expires_at,
    }
}

thread_local! {
    static FP: crate::audit::Fingerprinter = crate::audit::Fingerprinter::new();
}

#[tokio::test]
async fn coalesces_and_does_not_cache_failures() {
    let clock = ManualClock::new(SystemTime::now());
    let cache = Arc::new(CredentialCache::new(10, clock.clone(), None));
    let calls = Arc::new(AtomicUsize::new(0));
    let k = key("u");
    let fail = cache
        .get_or_sign_in(k.as_ref(), Lookup::default(), |_| async {
            Err(BrokerError::Internal("boom".into()))
        })
        .await;
    assert!(fail.is_err());
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (cache, calls, k, clock) = (cache.clone(), calls.clone(), k.clone(), clock.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_sign_in(k.as_ref(), Lookup::default(), move |_| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let c = creds(&key("u"), clock.now() + Duration::from_secs(60));
                    async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(c)
                    }
                })
                .await
                .map(|(_, hit)| hit)
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.inflight(), 0);
    clock.advance(Duration::from_secs(61));
    let (_, hit) = cache
        .get_or_sign_in(k.as_ref(), Lookup::default(), |_| async move {
            Ok(creds(
                &key("u"),
                SystemTime::now() + Duration::from_secs(60),
            ))
        })
        .await
        .unwrap();
    assert!(!hit, "expired by the injected clock");
}

#[tokio::test]
async fn evicts_expired_entries_on_its_own_and_reports_them() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let departed: OnDeparture = Arc::new(move |c, why| {
        let _ = tx.send((c, why));
    });
    let cache = CredentialCache::new(10, system(), Some(departed));
    let k = key("u");
    cache
        .get_or_sign_in(k.as_ref(), Lookup::default(), |_| async move {
            Ok(creds(
                &key("u"),
                SystemTime::now() + Duration::from_millis(50),
            ))
        })
        .await
        .unwrap();
    assert_eq!(cache.entries.iter().count(), 1);
    // moka's timer wheel works in ~1 s buckets: poll, bounded.
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cache.run_pending_tasks();
        if cache.is_empty() {
            break;
        }
    }
    assert_eq!(cache.len(), 0);
    let gone = tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gone.0.key, k);
    assert_eq!(gone.1, Departure::Expired);
}

#[tokio::test]
async fn borrowed_keys_find_owned_ones_and_shared_values_are_interned() {
    let cache = CredentialCache::new(10, system(), None);
    let scopes: Vec<Scope> = vec!["tableau:content:read".parse().unwrap()];
    let late = SystemTime::now() + Duration::from_secs(600);
    for user in ["a", "b"] {
        let key = KeyRef {
            site: "s",
            user,
            scopes: &scopes,
            claims: &crate::claims::NO_CLAIMS,
        };
        let (_, hit) = cache
            .get_or_sign_in(key, Lookup::default(), |k| {
                let c = creds_with(k, late, user);
                async move { Ok(c) }
            })
            .await
            .unwrap();
        assert!(!hit);
        let (_, hit) = cache
            .get_or_sign_in(key, Lookup::default(), |_| async {
                Err(BrokerError::Internal("should be a hit".into()))
            })
            .await
            .unwrap();
        assert!(hit, "a borrowed key finds the entry its owned copy keys");
    }
    let (a, b) = (
        cache
            .entries
            .get(&KeyRef {
                site: "s",
                user: "a",
                scopes: &scopes,
                claims: &crate::claims::NO_CLAIMS,
            })
            .unwrap(),
        cache
            .entries
            .get(&KeyRef {
                site: "s",
                user: "b",
                scopes: &scopes,
                claims: &crate::claims::NO_CLAIMS,
            })
            .unwrap(),
    );
    assert!(Arc::ptr_eq(&a.key.site, &b.key.site));
    assert!(Arc::ptr_eq(&a.key.scopes, &b.key.scopes));
    assert!(Arc::ptr_eq(&a.site_luid, &b.site_luid));
    assert!(Arc::ptr_eq(&a.site_content_url, &b.site_content_url));
    assert!(Arc::ptr_eq(&a.server_url, &b.server_url));
    assert!(Arc::ptr_eq(&a.content_url, &b.content_url));
    assert!(Arc::ptr_eq(&a.client_id, &b.client_id));
    assert_eq!(cache.interned(), 7);
}

#[test]
fn the_interner_forgets_what_nothing_uses() {
    // moka frees removed keys through epoch-based reclamation, later and not on cue, so
    // the pruning is checked on the interner itself.
    let strings: Interner<str> = Interner::new();
    let a = strings.intern("finance");
    let b = strings.intern("finance");
    let c = strings.intern("sales");
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(strings.len(), 2);
    drop((a, c));
    strings.prune();
    assert_eq!(strings.len(), 1, "b still uses finance");
    drop(b);
    strings.prune();
    assert_eq!(strings.len(), 0);
}

#[tokio::test]
async fn the_digest_index_follows_replacements() {
    let cache = CredentialCache::new(10, system(), None);
    let k = key("u");
    let late = SystemTime::now() + Duration::from_secs(600);
    let sign_in = |token: &'static str| {
        move |k: &CacheKey| {
            let c = creds_with(k, late, token);
            async move { Ok(c) }
        }
    };
    let (old, _) = cache
        .get_or_sign_in(k.as_ref(), Lookup::default(), sign_in("old"))
        .await
        .unwrap();
    assert!(cache.find_by_digest(&old.digest).is_some());
    let refresh = Lookup {
        force_refresh: true,
        ..Lookup::default()
    };
    let (new, _) = cache
        .get_or_sign_in(k.as_ref(), refresh, sign_in("new"))
        .await
        .unwrap();
    cache.run_pending_tasks();
    assert!(cache.find_by_digest(&old.digest).is_none(), "replaced");
    let found = cache.find_by_digest(&new.digest).unwrap();
    assert!(Arc::ptr_eq(&found, &new));
    assert!(cache.remove_by_digest(&new.digest).is_some());
    assert!(cache.find_by_digest(&new.digest).is_none());
}

#[tokio::test]
async fn dropping_a_site_hands_its_sessions_to_the_sign_out_schedule() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let departed: OnDeparture = Arc::new(move |c, why| {
        assert_eq!(
            why,
            Departure::Replaced,
            "other callers may hold them: grace period"
        );
        let _ = tx.send(c);
    });
    let cache = CredentialCache::new(10, system(), Some(departed));
    let late = SystemTime::now() + Duration::from_secs(600);
    let mut other = key("x");
    other.site = Arc::from("sales");
    for k in [key("a"), key("b"), other.clone()] {
        cache
            .get_or_sign_in(k.as_ref(), Lookup::default(), |k: &CacheKey| {
                let c = creds_with(k, late, &format!("t-{}-{}", k.site, k.user));
                async move { Ok(c) }
            })
            .await
            .unwrap();
    }
    assert_eq!(cache.drop_site("s"), 2);
    let mut dropped: Vec<String> = (0..2)
        .map(|_| rx.try_recv().unwrap().key.user.to_string())
        .collect();
    dropped.sort();
    assert_eq!(dropped, ["a", "b"]);
    assert!(rx.try_recv().is_err(), "sales untouched");
    cache.run_pending_tasks();
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.drop_site("s"), 0);
}

#[test]
fn luids_keep_their_text() {
    for s in [
        "9a8b7c6d-0000-4000-8000-000000000001",
        "9A8B7C6D-0000-4000-8000-000000000001",
        "9a8b7c6d000040008000000000000001",
        "u-1",
        "",
    ] {
        let l = Luid::from(s.to_owned());
        assert_eq!(l.to_string(), s);
        assert!(l == s);
    }
    assert!(matches!(
        Luid::from("9a8b7c6d-0000-4000-8000-000000000001".to_owned()),
        Luid::Uuid(_)
    ));
    assert!(matches!(
        Luid::from("9A8B7C6D-0000-4000-8000-000000000001".to_owned()),
        Luid::Text(_)
    ));
}

#[test]
fn an_entry_stays_small() {
    // A regression guard on the per-entry footprint (the benchmark measures the whole).
    // 184 since issue 12: each session carries the (interned) server URL that issued it, so
    // it is never handed out next to another server's URL. 216 since issue 24: the content
    // URL and client ID that issued it too (interned, so 2 × 16 bytes per entry). 224 since
    // issue 25: the key holds its claims beyond scp (one pointer; the empty set is shared).
    assert!(
        std::mem::size_of::<Credentials>() <= 224,
        "{}",
        std::mem::size_of::<Credentials>()
    );
}

#[test]
fn a_replaced_entry_lives_until_the_new_tokens_end() {
    use moka::Expiry;
    let now = SystemTime::now();
    let clock = ManualClock::new(now);
    let expiry = ExpireAtDeadline {
        clock: clock.clone(),
    };
    let k = key("u");
    let old = Arc::new(creds(&k, now + Duration::from_secs(60)));
    let new = Arc::new(creds(&k, now + Duration::from_secs(4 * 3600)));
    let at = std::time::Instant::now();
    assert_eq!(
        expiry.expire_after_create(&k, &old, at),
        Some(Duration::from_secs(60))
    );
    // A refresh ahead of expiry stores a new token under the same key: its end is what counts,
    // not the minute the old token had left.
    assert_eq!(
        expiry.expire_after_update(&k, &new, at, Some(Duration::from_secs(60))),
        Some(Duration::from_secs(4 * 3600))
    );
    clock.set(now + Duration::from_secs(5 * 3600));
    assert_eq!(
        expiry.expire_after_update(&k, &new, at, Some(Duration::from_secs(1))),
        Some(Duration::ZERO)
    );
}
