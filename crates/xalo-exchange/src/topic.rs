//! Topics, subscriptions and the event outbox, in a gateway's database (component
//! `gateway-pubsub`).
//!
//! At the provider's gateway: the topics its member publishes on (named like services,
//! `VN/GOV/000001/population/births`), the access rights on them (default deny), the remote
//! subscribers other gateways registered, and the outbox: each accepted event and one
//! delivery row per subscriber, which the delivery worker claims, retries and marks done.
//! At the subscriber's gateway: its own subscriptions and where to deliver them.
//!
//! Everything a publisher was told is accepted is committed here first, so a gateway killed
//! at any moment delivers it after it starts again.

use serde::{Deserialize, Serialize};
use xalo_core::{ClientId, Error, ErrorCode, ServiceId, SubsystemId};
use xalo_store::{Database, DbResultExt, Migration, Row};

use crate::access_right::{AccessRight, Endpoint, Subject};

const MIGRATIONS: &[Migration] = &[Migration::per_backend(
    1,
    "topics, subscriptions and the event outbox",
    "CREATE TABLE pubsub_topic (
        topic TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        description TEXT NOT NULL,
        created_unix BIGINT NOT NULL
    );
    CREATE TABLE pubsub_topic_right (
        topic TEXT NOT NULL REFERENCES pubsub_topic (topic),
        subject TEXT NOT NULL,
        PRIMARY KEY (topic, subject)
    );
    CREATE TABLE pubsub_subscriber (
        topic TEXT NOT NULL REFERENCES pubsub_topic (topic),
        subscriber TEXT NOT NULL,
        created_unix BIGINT NOT NULL,
        PRIMARY KEY (topic, subscriber)
    );
    CREATE TABLE pubsub_event (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        event_id TEXT NOT NULL,
        headers TEXT NOT NULL,
        body BLOB NOT NULL,
        published_ms BIGINT NOT NULL,
        UNIQUE (topic, event_id)
    );
    CREATE TABLE pubsub_delivery (
        event_seq BIGINT NOT NULL REFERENCES pubsub_event (seq),
        subscriber TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        next_attempt_ms BIGINT NOT NULL,
        last_error TEXT,
        done_ms BIGINT,
        PRIMARY KEY (event_seq, subscriber)
    );
    CREATE INDEX pubsub_delivery_due ON pubsub_delivery (state, next_attempt_ms);
    CREATE TABLE pubsub_subscription (
        topic TEXT NOT NULL,
        subscriber TEXT NOT NULL,
        delivery_url TEXT NOT NULL,
        created_unix BIGINT NOT NULL,
        PRIMARY KEY (topic, subscriber)
    );",
    "CREATE TABLE pubsub_topic (
        topic TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        description TEXT NOT NULL,
        created_unix BIGINT NOT NULL
    );
    CREATE TABLE pubsub_topic_right (
        topic TEXT NOT NULL REFERENCES pubsub_topic (topic),
        subject TEXT NOT NULL,
        PRIMARY KEY (topic, subject)
    );
    CREATE TABLE pubsub_subscriber (
        topic TEXT NOT NULL REFERENCES pubsub_topic (topic),
        subscriber TEXT NOT NULL,
        created_unix BIGINT NOT NULL,
        PRIMARY KEY (topic, subscriber)
    );
    CREATE TABLE pubsub_event (
        seq BIGSERIAL PRIMARY KEY,
        topic TEXT NOT NULL,
        event_id TEXT NOT NULL,
        headers TEXT NOT NULL,
        body BYTEA NOT NULL,
        published_ms BIGINT NOT NULL,
        UNIQUE (topic, event_id)
    );
    CREATE TABLE pubsub_delivery (
        event_seq BIGINT NOT NULL REFERENCES pubsub_event (seq),
        subscriber TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        next_attempt_ms BIGINT NOT NULL,
        last_error TEXT,
        done_ms BIGINT,
        PRIMARY KEY (event_seq, subscriber)
    );
    CREATE INDEX pubsub_delivery_due ON pubsub_delivery (state, next_attempt_ms);
    CREATE TABLE pubsub_subscription (
        topic TEXT NOT NULL,
        subscriber TEXT NOT NULL,
        delivery_url TEXT NOT NULL,
        created_unix BIGINT NOT NULL,
        PRIMARY KEY (topic, subscriber)
    );",
)];

/// A delivery waiting for its subscriber's acknowledgement.
pub const PENDING: &str = "pending";
/// Acknowledged by the subscriber's gateway (after its backend took the event).
pub const DELIVERED: &str = "delivered";
/// Given up after the configured number of attempts: kept, whatever its age, until the
/// administrator sends it again (`POST /api/v1/deliveries/retry`).
pub const FAILED: &str = "failed";
/// Dropped because the subscriber lost its access right or unsubscribed.
pub const DROPPED: &str = "dropped";

/// A topic as its provider registers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewTopic {
    pub topic: ServiceId,
    #[serde(default)]
    pub description: String,
}

/// A right to receive a topic's events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewTopicRight {
    pub topic: ServiceId,
    pub subject: Subject,
}

/// A subscription as the subscriber's administrator registers it at its own gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewSubscription {
    pub topic: ServiceId,
    /// The subscribing subsystem, one of this gateway's member's.
    pub subscriber: SubsystemId,
    /// Where this gateway hands the events over: `http(s)://host[:port][/path]`.
    pub delivery_url: String,
}

/// A registered topic with its rights and remote subscribers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Topic {
    pub topic: ServiceId,
    pub description: String,
    pub access_rights: Vec<Subject>,
    pub subscribers: Vec<ClientId>,
}

/// One event of the outbox.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: i64,
    pub topic: ServiceId,
    pub event_id: String,
    /// The headers the publisher set that travel with the event (name, value).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub published_ms: i64,
}

/// The outcome of a publication.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Published {
    pub topic: ServiceId,
    pub event_id: String,
    /// False when an event with this idempotency key was accepted before.
    pub new: bool,
    /// Deliveries queued for it.
    pub deliveries: usize,
}

/// A delivery the worker claimed.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub event_seq: i64,
    pub subscriber: ClientId,
    pub attempts: i64,
}

/// What became of an attempt.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// The subscriber's gateway acknowledged it.
    Delivered,
    /// Try again at this time (ms since the epoch).
    Retry { error: &'a str, at_ms: i64 },
    /// Stop: [`FAILED`] after too many attempts, [`DROPPED`] when no longer allowed or
    /// refused for good; `sent` when this attempt reached the subscriber's gateway.
    GiveUp {
        state: &'static str,
        error: &'a str,
        sent: bool,
    },
}

/// The answer to an event whose id the topic holds already: published (not again) when
/// the body is the one stored, refused when it is another.
fn seen_before(
    topic: &ServiceId,
    event_id: &str,
    stored: &[u8],
    body: &[u8],
) -> Result<Published, Error> {
    if stored != body {
        return Err(Error::new(
            ErrorCode::ExchEventIdReused,
            format!(
                "event {event_id} was published on {topic} before with a different body; an update is a new event, with an id of its own"
            ),
        ));
    }
    Ok(Published {
        topic: topic.clone(),
        event_id: event_id.to_owned(),
        new: false,
        deliveries: 0,
    })
}

/// A delivery as the administration API lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryStatus {
    pub topic: String,
    pub event_id: String,
    pub subscriber: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
}

type SubscriptionLocks =
    std::collections::HashMap<(String, String), std::sync::Arc<tokio::sync::Mutex<()>>>;

/// The pub/sub tables of one gateway.
#[derive(Clone, Debug)]
pub struct TopicRegistry {
    db: Database,
    /// Wakes this instance's delivery worker when an event is accepted.
    wake: std::sync::Arc<tokio::sync::Notify>,
    /// See [`TopicRegistry::changing_subscription`]: one lock per (topic, subscriber),
    /// as few as the subscriptions this gateway's member makes.
    changing: std::sync::Arc<std::sync::Mutex<SubscriptionLocks>>,
}

pub(crate) use xalo_core::unix_now_ms as now_ms;

impl TopicRegistry {
    pub async fn open(db: Database) -> Result<TopicRegistry, Error> {
        db.migrate("gateway-pubsub", MIGRATIONS).await?;
        Ok(TopicRegistry {
            db,
            wake: Default::default(),
            changing: Default::default(),
        })
    }

    /// Held while a subscription of this gateway's is changed here and at the provider's
    /// gateway, so that two changes of it at this instance never interleave (one undoing
    /// the other's); changes of other subscriptions do not wait for it.
    pub async fn changing_subscription(
        &self,
        topic: &ServiceId,
        subscriber: &SubsystemId,
    ) -> tokio::sync::OwnedMutexGuard<()> {
        let key = (topic.to_string(), subscriber.to_string());
        let lock = match self.changing.lock() {
            Ok(mut locks) => locks.entry(key).or_default().clone(),
            // Poisoned (a panic elsewhere): a lock of its own still orders nothing, but
            // the change goes on as it did before this guard.
            Err(_) => Default::default(),
        };
        lock.lock_owned().await
    }

    /// Tell the delivery worker that deliveries are due.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Wait for [`TopicRegistry::wake`].
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Register (or re-describe) a topic.
    pub async fn add_topic(&self, t: &NewTopic) -> Result<(), Error> {
        let what = "registering a topic";
        let id = t.topic.to_string();
        let updated =
            xalo_store::sqlx::query("UPDATE pubsub_topic SET description = $2 WHERE topic = $1")
                .bind(&id)
                .bind(&t.description)
                .execute(self.db.pool())
                .await
                .db(what)?;
        if updated.rows_affected() == 0 {
            let r = xalo_store::sqlx::query(
                "INSERT INTO pubsub_topic (topic, provider, description, created_unix) VALUES ($1, $2, $3, $4)",
            )
            .bind(&id)
            .bind(t.topic.provider().to_string())
            .bind(&t.description)
            .bind(crate::unix_now())
            .execute(self.db.pool())
            .await
            .db(what);
            match r {
                // Registered by another instance meanwhile.
                Err(e) if e.code == ErrorCode::StoreConflict => {}
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    pub async fn has_topic(&self, topic: &ServiceId) -> Result<bool, Error> {
        Ok(
            xalo_store::sqlx::query("SELECT 1 FROM pubsub_topic WHERE topic = $1")
                .bind(topic.to_string())
                .fetch_optional(self.db.pool())
                .await
                .db("reading a topic")?
                .is_some(),
        )
    }

    fn unknown(topic: &ServiceId) -> Error {
        Error::new(
            ErrorCode::ExchUnknownTopic,
            format!("topic {topic} is not registered at this gateway"),
        )
    }

    pub async fn grant(&self, r: &NewTopicRight) -> Result<(), Error> {
        if !self.has_topic(&r.topic).await? {
            return Err(Self::unknown(&r.topic));
        }
        let result = xalo_store::sqlx::query(
            "INSERT INTO pubsub_topic_right (topic, subject) VALUES ($1, $2)",
        )
        .bind(r.topic.to_string())
        .bind(r.subject.to_string())
        .execute(self.db.pool())
        .await
        .db("granting a topic right");
        match result {
            // Granting twice is granting.
            Err(e) if e.code == ErrorCode::StoreConflict => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Withdraw a right; deliveries still queued for subscribers it let in are dropped by
    /// the worker, which checks the rights again before each attempt.
    pub async fn revoke(&self, r: &NewTopicRight) -> Result<(), Error> {
        xalo_store::sqlx::query("DELETE FROM pubsub_topic_right WHERE topic = $1 AND subject = $2")
            .bind(r.topic.to_string())
            .bind(r.subject.to_string())
            .execute(self.db.pool())
            .await
            .db("revoking a topic right")?;
        Ok(())
    }

    /// The rights on a topic, as access rights on every endpoint (a topic has none).
    pub async fn rights(&self, topic: &ServiceId) -> Result<Vec<AccessRight>, Error> {
        let what = "reading topic rights";
        xalo_store::sqlx::query("SELECT subject FROM pubsub_topic_right WHERE topic = $1")
            .bind(topic.to_string())
            .fetch_all(self.db.pool())
            .await
            .db(what)?
            .into_iter()
            .map(|r| {
                Ok(AccessRight {
                    endpoint: Endpoint::all(),
                    subject: r.try_get::<String, _>(0).db(what)?.parse()?,
                })
            })
            .collect()
    }

    /// Whether `client` (in `groups`) may receive the topic's events.
    pub async fn allows(
        &self,
        topic: &ServiceId,
        client: &ClientId,
        groups: &[&str],
    ) -> Result<bool, Error> {
        Ok(self
            .rights(topic)
            .await?
            .iter()
            .any(|r| r.allows(client, groups, "POST", "")))
    }

    /// Every topic with its rights and remote subscribers.
    pub async fn topics(&self) -> Result<Vec<Topic>, Error> {
        let what = "listing topics";
        let rows =
            xalo_store::sqlx::query("SELECT topic, description FROM pubsub_topic ORDER BY topic")
                .fetch_all(self.db.pool())
                .await
                .db(what)?;
        let mut out = Vec::new();
        for r in rows {
            let topic: ServiceId = r.try_get::<String, _>(0).db(what)?.parse()?;
            out.push(Topic {
                access_rights: self
                    .rights(&topic)
                    .await?
                    .into_iter()
                    .map(|r| r.subject)
                    .collect(),
                subscribers: self.subscribers(&topic).await?,
                description: r.try_get(1).db(what)?,
                topic,
            });
        }
        Ok(out)
    }

    /// Record a remote subscriber (provider side); subscribing twice is subscribing.
    pub async fn add_subscriber(&self, topic: &ServiceId, who: &ClientId) -> Result<(), Error> {
        let r = xalo_store::sqlx::query(
            "INSERT INTO pubsub_subscriber (topic, subscriber, created_unix) VALUES ($1, $2, $3)",
        )
        .bind(topic.to_string())
        .bind(who.to_string())
        .bind(crate::unix_now())
        .execute(self.db.pool())
        .await
        .db("recording a subscriber");
        match r {
            Err(e) if e.code == ErrorCode::StoreConflict => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Forget a remote subscriber and drop what is still queued for it.
    pub async fn remove_subscriber(&self, topic: &ServiceId, who: &ClientId) -> Result<(), Error> {
        let what = "removing a subscriber";
        let mut tx = self.db.begin_write().await?;
        xalo_store::sqlx::query(
            "DELETE FROM pubsub_subscriber WHERE topic = $1 AND subscriber = $2",
        )
        .bind(topic.to_string())
        .bind(who.to_string())
        .execute(&mut *tx)
        .await
        .db(what)?;
        xalo_store::sqlx::query(
            "UPDATE pubsub_delivery SET state = $1, last_error = $2, done_ms = $3 \
             WHERE subscriber = $4 AND state = $5 \
             AND event_seq IN (SELECT seq FROM pubsub_event WHERE topic = $6)",
        )
        .bind(DROPPED)
        .bind("unsubscribed")
        .bind(now_ms())
        .bind(who.to_string())
        .bind(PENDING)
        .bind(topic.to_string())
        .execute(&mut *tx)
        .await
        .db(what)?;
        tx.commit().await.db(what)
    }

    pub async fn subscribers(&self, topic: &ServiceId) -> Result<Vec<ClientId>, Error> {
        let what = "listing subscribers";
        xalo_store::sqlx::query(
            "SELECT subscriber FROM pubsub_subscriber WHERE topic = $1 ORDER BY subscriber",
        )
        .bind(topic.to_string())
        .fetch_all(self.db.pool())
        .await
        .db(what)?
        .into_iter()
        .map(|r| Ok(r.try_get::<String, _>(0).db(what)?.parse()?))
        .collect()
    }

    /// Accept an event: store it and queue one delivery per subscriber in `to`, in one
    /// transaction. An event whose idempotency key the topic has seen is not stored again
    /// (a publisher's retry); one whose key was taken by another body is refused, since
    /// answering it as published would drop it unsent.
    pub async fn publish(
        &self,
        topic: &ServiceId,
        event_id: &str,
        headers: &[(String, String)],
        body: &[u8],
        to: &[ClientId],
    ) -> Result<Published, Error> {
        let what = "storing an event";
        let headers_json = serde_json::to_string(headers)
            .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        let mut tx = self.db.begin_write().await?;
        let seen = xalo_store::sqlx::query(
            "SELECT body FROM pubsub_event WHERE topic = $1 AND event_id = $2",
        )
        .bind(topic.to_string())
        .bind(event_id)
        .fetch_optional(&mut *tx)
        .await
        .db(what)?;
        if let Some(row) = seen {
            tx.rollback().await.db(what)?;
            let stored: Vec<u8> = row.try_get(0).db(what)?;
            return seen_before(topic, event_id, &stored, body);
        }
        let now = now_ms();
        let inserted = xalo_store::sqlx::query(
            "INSERT INTO pubsub_event (topic, event_id, headers, body, published_ms) \
             VALUES ($1, $2, $3, $4, $5) RETURNING seq",
        )
        .bind(topic.to_string())
        .bind(event_id)
        .bind(headers_json)
        .bind(body.to_vec())
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .db(what);
        let seq: i64 = match inserted {
            Ok(row) => row.try_get(0).db(what)?,
            // The same key published at the same moment through another instance.
            Err(e) if e.code == ErrorCode::StoreConflict => {
                tx.rollback().await.db(what)?;
                let stored: Vec<u8> = xalo_store::sqlx::query(
                    "SELECT body FROM pubsub_event WHERE topic = $1 AND event_id = $2",
                )
                .bind(topic.to_string())
                .bind(event_id)
                .fetch_one(self.db.pool())
                .await
                .db(what)?
                .try_get(0)
                .db(what)?;
                return seen_before(topic, event_id, &stored, body);
            }
            Err(e) => return Err(e),
        };
        for s in to {
            xalo_store::sqlx::query(
                "INSERT INTO pubsub_delivery (event_seq, subscriber, state, attempts, next_attempt_ms) \
                 VALUES ($1, $2, $3, 0, $4)",
            )
            .bind(seq)
            .bind(s.to_string())
            .bind(PENDING)
            .bind(now)
            .execute(&mut *tx)
            .await
            .db(what)?;
        }
        tx.commit().await.db(what)?;
        Ok(Published {
            topic: topic.clone(),
            event_id: event_id.to_owned(),
            new: true,
            deliveries: to.len(),
        })
    }

    /// Claim up to `limit` deliveries that are due, each for `lease_ms`: a claim moves its
    /// next attempt past the lease with a compare-and-set, so two instances of a gateway on
    /// one database never send the same delivery at once, and a claim whose instance died
    /// falls due again when the lease ends.
    ///
    /// At most `per_subscriber` under way per subscriber, counting those this instance has
    /// `under_way` already (a subscriber whose backend hangs holds a few of the slots
    /// until its attempts time out, never all of them, and the others' events go on).
    pub async fn claim_due(
        &self,
        limit: i64,
        lease_ms: i64,
        per_subscriber: usize,
        under_way: &std::collections::HashMap<String, usize>,
    ) -> Result<Vec<Claimed>, Error> {
        let what = "claiming deliveries";
        let now = now_ms();
        let per_subscriber = per_subscriber.max(1);
        let skippable: i64 = under_way
            .values()
            .map(|n| (*n).min(per_subscriber) as i64)
            .sum();
        let busy = at_their_share(under_way, per_subscriber);
        // Parameters $4… name the busy subscribers (a few: the slots are few), left out
        // before the oldest due are taken, so that they do not crowd out the others.
        let not_busy = subscriber_not_in(4, busy.len());
        let sql = format!(
            "SELECT event_seq, subscriber, attempts, next_attempt_ms FROM (\
             SELECT event_seq, subscriber, attempts, next_attempt_ms, ROW_NUMBER() OVER (\
             PARTITION BY subscriber ORDER BY next_attempt_ms, event_seq) AS place FROM (\
             SELECT event_seq, subscriber, attempts, next_attempt_ms FROM pubsub_delivery \
             WHERE state = $1 AND next_attempt_ms <= $2{not_busy} \
             ORDER BY next_attempt_ms, event_seq LIMIT {}) oldest) due \
             WHERE place <= $3 ORDER BY next_attempt_ms, event_seq",
            limit.clamp(1, 1000) * 8
        );
        let rows = busy
            .iter()
            .fold(
                // Rows of subscribers with some under way may be passed over below, at
                // most that many each: asked for on top, so that `limit` can be claimed.
                xalo_store::sqlx::query(sqlx_limit(&sql, limit.saturating_add(skippable)))
                    .bind(PENDING)
                    .bind(now)
                    .bind(per_subscriber as i64),
                |q, b| q.bind(b.clone()),
            )
            .fetch_all(self.db.pool())
            .await
            .db(what)?;
        let mut taken: std::collections::HashMap<String, usize> = Default::default();
        let mut claimed = Vec::new();
        for r in rows {
            let event_seq: i64 = r.try_get(0).db(what)?;
            let subscriber: String = r.try_get(1).db(what)?;
            let attempts: i64 = r.try_get(2).db(what)?;
            let due: i64 = r.try_get(3).db(what)?;
            if claimed.len() as i64 >= limit {
                break;
            }
            let now_under_way = under_way.get(&subscriber).copied().unwrap_or(0)
                + taken.get(&subscriber).copied().unwrap_or(0);
            if now_under_way >= per_subscriber {
                continue;
            }
            let done = xalo_store::sqlx::query(
                "UPDATE pubsub_delivery SET next_attempt_ms = $1 \
                 WHERE event_seq = $2 AND subscriber = $3 AND state = $4 AND next_attempt_ms = $5",
            )
            .bind(now + lease_ms)
            .bind(event_seq)
            .bind(&subscriber)
            .bind(PENDING)
            .bind(due)
            .execute(self.db.pool())
            .await
            .db(what)?;
            if done.rows_affected() == 1 {
                *taken.entry(subscriber.clone()).or_default() += 1;
                claimed.push(Claimed {
                    event_seq,
                    subscriber: subscriber.parse()?,
                    attempts,
                });
            }
        }
        Ok(claimed)
    }

    /// When the next delivery falls due (ms since the epoch), if any is pending, but for
    /// the subscribers in `busy` (those with their share under way: theirs wait for a
    /// slot, not for a time).
    pub async fn next_due(&self, busy: &[String]) -> Result<Option<i64>, Error> {
        let not_busy = subscriber_not_in(2, busy.len());
        let sql =
            format!("SELECT MIN(next_attempt_ms) FROM pubsub_delivery WHERE state = $1{not_busy}");
        let row = busy
            .iter()
            .fold(
                xalo_store::sqlx::query(xalo_store::sqlx::AssertSqlSafe(sql)).bind(PENDING),
                |q, b| q.bind(b.clone()),
            )
            .fetch_one(self.db.pool())
            .await
            .db("reading the outbox")?;
        row.try_get::<Option<i64>, _>(0).db("reading the outbox")
    }

    pub async fn event(&self, seq: i64) -> Result<Option<StoredEvent>, Error> {
        let what = "reading an event";
        let Some(r) = xalo_store::sqlx::query(
            "SELECT topic, event_id, headers, body, published_ms FROM pubsub_event WHERE seq = $1",
        )
        .bind(seq)
        .fetch_optional(self.db.pool())
        .await
        .db(what)?
        else {
            return Ok(None);
        };
        let headers: String = r.try_get(2).db(what)?;
        Ok(Some(StoredEvent {
            seq,
            topic: r.try_get::<String, _>(0).db(what)?.parse()?,
            event_id: r.try_get(1).db(what)?,
            headers: serde_json::from_str(&headers)
                .map_err(|e| Error::new(ErrorCode::StoreQuery, format!("{what}: {e}")))?,
            body: r.try_get(3).db(what)?,
            published_ms: r.try_get(4).db(what)?,
        }))
    }

    /// Record the outcome of an attempt on a claimed delivery.
    pub async fn attempted(&self, c: &Claimed, outcome: Outcome<'_>) -> Result<(), Error> {
        let what = "recording a delivery attempt";
        let now = now_ms();
        let q = match outcome {
            Outcome::Delivered => xalo_store::sqlx::query(
                "UPDATE pubsub_delivery SET state = $1, attempts = attempts + 1, done_ms = $2, \
                 last_error = NULL WHERE event_seq = $3 AND subscriber = $4",
            )
            .bind(DELIVERED)
            .bind(now),
            Outcome::Retry { error, at_ms } => xalo_store::sqlx::query(
                "UPDATE pubsub_delivery SET last_error = $1, attempts = attempts + 1, \
                 next_attempt_ms = $2 WHERE event_seq = $3 AND subscriber = $4",
            )
            .bind(error.to_owned())
            .bind(at_ms),
            // A delivery given up counts the attempt that failed last, if it was sent.
            Outcome::GiveUp { state, error, sent } => xalo_store::sqlx::query(
                "UPDATE pubsub_delivery SET state = $1, last_error = $2, done_ms = $3, \
                 attempts = attempts + $4 WHERE event_seq = $5 AND subscriber = $6",
            )
            .bind(state)
            .bind(error.to_owned())
            .bind(now)
            .bind(i64::from(sent)),
        };
        q.bind(c.event_seq)
            .bind(c.subscriber.to_string())
            .execute(self.db.pool())
            .await
            .db(what)?;
        Ok(())
    }

    /// Send the given-up deliveries again, from their first attempt; how many.
    pub async fn retry_failed(&self) -> Result<u64, Error> {
        let requeued = xalo_store::sqlx::query(
            "UPDATE pubsub_delivery SET state = $1, attempts = 0, next_attempt_ms = $2, \
             done_ms = NULL WHERE state = $3",
        )
        .bind(PENDING)
        .bind(now_ms())
        .bind(FAILED)
        .execute(self.db.pool())
        .await
        .db("sending failed deliveries again")?;
        self.wake();
        Ok(requeued.rows_affected())
    }

    /// The latest deliveries (newest events first), for the administration API.
    pub async fn deliveries(&self, limit: i64) -> Result<Vec<DeliveryStatus>, Error> {
        let what = "listing deliveries";
        xalo_store::sqlx::query(sqlx_limit(
            "SELECT e.topic, e.event_id, d.subscriber, d.state, d.attempts, d.last_error \
             FROM pubsub_delivery d JOIN pubsub_event e ON e.seq = d.event_seq \
             ORDER BY d.event_seq DESC, d.subscriber",
            limit,
        ))
        .fetch_all(self.db.pool())
        .await
        .db(what)?
        .into_iter()
        .map(|r| {
            Ok(DeliveryStatus {
                topic: r.try_get(0).db(what)?,
                event_id: r.try_get(1).db(what)?,
                subscriber: r.try_get(2).db(what)?,
                state: r.try_get(3).db(what)?,
                attempts: r.try_get(4).db(what)?,
                last_error: r.try_get(5).db(what)?,
            })
        })
        .collect()
    }

    /// Remove delivered and dropped deliveries older than `cutoff_ms`, and events no
    /// delivery needs; pending and failed ones stay whatever their age (an event its
    /// publisher was told was taken is not deleted undelivered).
    pub async fn sweep(&self, cutoff_ms: i64) -> Result<(), Error> {
        let what = "sweeping the outbox";
        let mut tx = self.db.begin_write().await?;
        xalo_store::sqlx::query(
            "DELETE FROM pubsub_delivery WHERE state IN ($1, $2) AND done_ms < $3",
        )
        .bind(DELIVERED)
        .bind(DROPPED)
        .bind(cutoff_ms)
        .execute(&mut *tx)
        .await
        .db(what)?;
        xalo_store::sqlx::query(
            "DELETE FROM pubsub_event WHERE published_ms < $1 AND NOT EXISTS \
             (SELECT 1 FROM pubsub_delivery d WHERE d.event_seq = pubsub_event.seq)",
        )
        .bind(cutoff_ms)
        .execute(&mut *tx)
        .await
        .db(what)?;
        tx.commit().await.db(what)
    }

    /// Register (or move) a subscription at the subscriber's gateway.
    pub async fn add_subscription(&self, s: &NewSubscription) -> Result<(), Error> {
        let what = "registering a subscription";
        let mut tx = self.db.begin_write().await?;
        xalo_store::sqlx::query(
            "DELETE FROM pubsub_subscription WHERE topic = $1 AND subscriber = $2",
        )
        .bind(s.topic.to_string())
        .bind(s.subscriber.to_string())
        .execute(&mut *tx)
        .await
        .db(what)?;
        xalo_store::sqlx::query(
            "INSERT INTO pubsub_subscription (topic, subscriber, delivery_url, created_unix) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(s.topic.to_string())
        .bind(s.subscriber.to_string())
        .bind(&s.delivery_url)
        .bind(crate::unix_now())
        .execute(&mut *tx)
        .await
        .db(what)?;
        tx.commit().await.db(what)
    }

    pub async fn remove_subscription(
        &self,
        topic: &ServiceId,
        subscriber: &SubsystemId,
    ) -> Result<bool, Error> {
        let r = xalo_store::sqlx::query(
            "DELETE FROM pubsub_subscription WHERE topic = $1 AND subscriber = $2",
        )
        .bind(topic.to_string())
        .bind(subscriber.to_string())
        .execute(self.db.pool())
        .await
        .db("removing a subscription")?;
        Ok(r.rows_affected() > 0)
    }

    /// Where to deliver `topic`'s events for `subscriber`, when it subscribed here.
    pub async fn delivery_url(
        &self,
        topic: &ServiceId,
        subscriber: &SubsystemId,
    ) -> Result<Option<String>, Error> {
        let row = xalo_store::sqlx::query(
            "SELECT delivery_url FROM pubsub_subscription WHERE topic = $1 AND subscriber = $2",
        )
        .bind(topic.to_string())
        .bind(subscriber.to_string())
        .fetch_optional(self.db.pool())
        .await
        .db("reading a subscription")?;
        row.map(|r| r.try_get(0).db("reading a subscription"))
            .transpose()
    }

    /// This gateway's own subscriptions.
    pub async fn subscriptions(&self) -> Result<Vec<NewSubscription>, Error> {
        let what = "listing subscriptions";
        xalo_store::sqlx::query(
            "SELECT topic, subscriber, delivery_url FROM pubsub_subscription ORDER BY topic, subscriber",
        )
        .fetch_all(self.db.pool())
        .await
        .db(what)?
        .into_iter()
        .map(|r| {
            Ok(NewSubscription {
                topic: r.try_get::<String, _>(0).db(what)?.parse()?,
                subscriber: r.try_get::<String, _>(1).db(what)?.parse()?,
                delivery_url: r.try_get(2).db(what)?,
            })
        })
        .collect()
    }
}

/// A query with a numeric LIMIT (clamped; never from input as text).
/// The subscribers with `per_subscriber` deliveries under way already, whom a claim
/// passes over.
pub(crate) fn at_their_share(
    under_way: &std::collections::HashMap<String, usize>,
    per_subscriber: usize,
) -> Vec<String> {
    under_way
        .iter()
        .filter(|(_, n)| **n >= per_subscriber.max(1))
        .map(|(s, _)| s.clone())
        .collect()
}

/// ` AND subscriber NOT IN ($first, …)` for `count` subscribers bound from parameter
/// `first` on (nothing for none).
fn subscriber_not_in(first: usize, count: usize) -> String {
    if count == 0 {
        return String::new();
    }
    let params: Vec<String> = (first..first + count).map(|i| format!("${i}")).collect();
    format!(" AND subscriber NOT IN ({})", params.join(", "))
}

fn sqlx_limit(sql: &str, limit: i64) -> xalo_store::sqlx::AssertSqlSafe<String> {
    xalo_store::sqlx::AssertSqlSafe(format!("{sql} LIMIT {}", limit.clamp(1, 1000)))
}
