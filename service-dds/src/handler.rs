//! The Data Vault step, one batch at a time. Versions are gated per order: only a version newer
//! than the latest applied one (`dds.order_load_state`, locked for the transaction) is loaded,
//! so duplicates, replays and late older versions change nothing. Applied versions are loaded
//! and their counter events published inside one transaction, which commits only after the
//! broker acknowledged the events.

use std::collections::BTreeMap;

use diesel_async::AsyncPgConnection;
use vault_core::decode;
use vault_core::events::cdm_events;
use vault_core::vault::{self, VaultRows};
use vault_core::{version, EnrichedOrder, HashKey};
use vault_runtime::{
    Entry, Failure, InMessage, OutMessage, ProbeKeys, Rejection, Rejects, Settings, Stage,
    TableAccess,
};

use crate::load;

/// The Data Vault stage.
#[derive(Debug)]
pub struct DdsStage {
    /// `load_src` of every row this stage writes: the topic it reads.
    load_src: String,
}

impl Stage for DdsStage {
    type Item = EnrichedOrder;
    type Needs = ();
    const PUBLISHES: bool = true;
    fn tables() -> Vec<TableAccess> {
        load::tables()
    }

    fn new((): (), settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            load_src: settings.kafka.source_topic.clone().unwrap_or_default(),
        })
    }

    fn decode(&self, message: &InMessage) -> Result<EnrichedOrder, Rejection> {
        Ok(decode::enriched_order(message.payload()).and_then(check_amounts)?)
    }

    /// One made-up order (a user, a restaurant, a dish in a category, all new) loaded as a
    /// batch's are: a row in every Data Vault table and the load state.
    async fn probe(&self, conn: &mut AsyncPgConnection) -> Result<(), Failure> {
        let keys = ProbeKeys::new();
        let order = probe_order(&keys).map_err(|e| Failure::Systemic(e.into()))?;
        load::load(conn, &[&order], "probe").await?;
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut AsyncPgConnection,
        orders: Vec<Entry<EnrichedOrder>>,
        _: &mut Rejects<'_>,
    ) -> Result<Vec<OutMessage>, Failure> {
        // Versions per order, in arrival order.
        let mut versions: BTreeMap<HashKey, Vec<(EnrichedOrder, Option<i64>)>> = BTreeMap::new();
        for Entry {
            item: order,
            sent_ms,
            ..
        } in orders
        {
            versions
                .entry(HashKey::order(order.payload.id))
                .or_default()
                .push((order, sent_ms));
        }
        // Each version's Data Vault rows and counter events are worked out on another thread
        // while Postgres reads and locks the gate.
        let keys: Vec<HashKey> = versions.keys().copied().collect();
        let prepare = tokio::task::spawn_blocking(move || prepare(versions));
        let (stored, prepared) =
            futures::future::join(load::Stored::read(conn, keys.iter()), prepare).await;
        let stored = stored?;
        let mut prepared = prepared.map_err(|error| {
            Failure::Suspect(anyhow::anyhow!(
                "preparing the batch's rows failed: {error}"
            ))
        })?;
        let mut applied: Vec<&mut Version> = prepared
            .iter_mut()
            .flat_map(|(key, arrived)| {
                version::applicable(stored.applied(key), arrived, |version| {
                    version.order.payload.update_ts
                })
            })
            .collect();
        // Loading in time order makes the newest observation of a shared entity (a user's
        // name, say) its current satellite row.
        applied.sort_by_key(|version| (version.order.payload.update_ts, version.order.payload.id));
        let mut rows = Vec::with_capacity(applied.len());
        let mut events = Vec::with_capacity(applied.len());
        for version in &mut applied {
            rows.extend(version.rows.take());
            if let Some(event) = std::mem::replace(&mut version.event, Ok(None))? {
                events.push(event);
            }
        }
        let applied: Vec<&EnrichedOrder> =
            applied.into_iter().map(|version| &version.order).collect();
        load::load_read(conn, &applied, rows, &stored, &self.load_src)
            .await
            .map_err(load::failure)?;
        Ok(events)
    }
}

/// One version of an order in a batch, with what loading it takes: its Data Vault rows and the
/// message of its counter events (none when it has none), stamped with the time its source
/// message was sent.
struct Version {
    order: EnrichedOrder,
    /// Taken by the load.
    rows: Option<VaultRows>,
    event: Result<Option<OutMessage>, serde_json::Error>,
}

/// Works out every version's rows and events, whether or not the gate lets it apply (in a
/// drain nearly all do; what is left over is a late duplicate's).
fn prepare(
    versions: BTreeMap<HashKey, Vec<(EnrichedOrder, Option<i64>)>>,
) -> BTreeMap<HashKey, Vec<Version>> {
    versions
        .into_iter()
        .map(|(key, arrived)| {
            let prepared = arrived
                .into_iter()
                .map(|(order, sent_ms)| {
                    let rows = vault::rows(&order);
                    let order_events = cdm_events(&order);
                    let event = if order_events.is_empty() {
                        Ok(None)
                    } else {
                        serde_json::to_vec(&order_events).map(|payload| {
                            Some(OutMessage {
                                key: order.payload.id.to_string(),
                                sent_ms,
                                payload,
                            })
                        })
                    };
                    Version {
                        order,
                        rows: Some(rows),
                        event,
                    }
                })
                .collect();
            (key, prepared)
        })
        .collect()
}

/// Amounts must fit `numeric(19, 5)`; a larger one would fail its batch forever.
fn check_amounts(order: EnrichedOrder) -> Result<EnrichedOrder, decode::DecodeError> {
    let p = &order.payload;
    let amounts = [("payload.cost", p.cost), ("payload.payment", p.payment)]
        .into_iter()
        .chain(
            p.products
                .iter()
                .map(|product| ("payload.products[].price", product.price)),
        );
    for (path, amount) in amounts {
        if !amount.fits_numeric(19, 5) {
            return Err(decode::DecodeError::Field {
                path: path.to_owned(),
                message: format!("{amount} does not fit numeric(19,5)"),
            });
        }
    }
    Ok(order)
}

/// The order [`DdsStage::probe`] loads, with fresh keys.
fn probe_order(keys: &ProbeKeys) -> Result<EnrichedOrder, vault_core::contract::ScalarError> {
    use vault_core::contract::{
        Amount, EnrichedPayload, EnrichedProduct, EntityId, OrderId, OrderStatus, RestaurantRef,
        UserRef,
    };
    let now = vault_core::Timestamp::from_datetime(chrono::Utc::now());
    let id = OrderId(keys.id());
    let name = format!("probe {}", keys.entity(0));
    Ok(EnrichedOrder {
        object_id: id,
        object_type: "order".to_owned(),
        payload: EnrichedPayload {
            id,
            date: now,
            cost: Amount::from_i64(1),
            payment: Amount::from_i64(1),
            status: OrderStatus::Closed,
            update_ts: now,
            restaurant: RestaurantRef {
                id: EntityId::parse(&keys.entity(1))?,
                name: name.clone(),
            },
            user: UserRef {
                id: EntityId::parse(&keys.entity(2))?,
                name: name.clone(),
                login: name.clone(),
            },
            products: vec![EnrichedProduct {
                id: EntityId::parse(&keys.entity(3))?,
                price: Amount::from_i64(1),
                quantity: 1,
                name: name.clone(),
                category: name,
            }],
        },
    })
}
