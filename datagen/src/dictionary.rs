//! The synthetic dictionary set: users and restaurants with menus, generated from a seed, and
//! loading whatever dictionary Redis already holds.

use std::collections::HashMap;

use bb8_redis::redis::{self, AsyncCommands};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use vault_core::contract::MenuItem;
use vault_core::{decode, Amount, EntityId, Restaurant, Timestamp, User};
use vault_runtime::RedisPool;

/// The users and restaurants orders are generated from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dictionary {
    pub users: Vec<User>,
    pub restaurants: Vec<Restaurant>,
}

impl Dictionary {
    /// Usable for generating orders: someone to order, somewhere with something to order.
    pub fn is_usable(&self) -> bool {
        !self.users.is_empty() && self.restaurants.iter().any(|r| !r.menu.is_empty())
    }
}

const FIRST_NAMES: &[&str] = &[
    "Ирина",
    "Анна",
    "Мария",
    "Елена",
    "Ольга",
    "Дмитрий",
    "Алексей",
    "Сергей",
    "Андрей",
    "Павел",
    "Наталья",
    "Татьяна",
    "Михаил",
    "Николай",
    "Екатерина",
];
const LAST_NAMES: &[&str] = &[
    "Соколова",
    "Иванова",
    "Петрова",
    "Смирнова",
    "Кузнецова",
    "Попов",
    "Васильев",
    "Новиков",
    "Фёдоров",
    "Морозов",
    "Волков",
    "Лебедев",
];
const RESTAURANTS: &[&str] = &[
    "Пекарня у дома",
    "Пицца Роса",
    "Суши Мастер",
    "Бургер Хаус",
    "Вкус Кавказа",
    "Кофейня №1",
    "Сытый папа",
    "Обед Буфет",
    "Pasta La Vista",
    "Вок и Рис",
    "Домашняя кухня",
    "Шаурма 24",
];
/// Dishes per category; the empty category is real (menus carry items without one).
const DISHES: &[(&str, &[&str])] = &[
    (
        "Пицца",
        &[
            "Маргарита",
            "Пепперони",
            "Четыре сыра",
            "Гавайская",
            "Диабло",
        ],
    ),
    (
        "Выпечка",
        &[
            "Хачапури по-аджарски",
            "Пирог с капустой",
            "Круассан",
            "Сырники",
        ],
    ),
    (
        "Напитки",
        &[
            "Морс клюквенный",
            "Лимонад",
            "Капучино",
            "Чай чёрный",
            "Квас",
        ],
    ),
    ("Супы", &["Борщ", "Том ям", "Солянка", "Куриный суп"]),
    ("Салаты", &["Цезарь", "Греческий", "Оливье"]),
    ("Бургеры", &["Чизбургер", "Дабл бургер", "Чикен бургер"]),
    ("Суши", &["Филадельфия", "Калифорния", "Унаги маки"]),
    ("Десерты", &["Тирамису", "Чизкейк", "Медовик"]),
    ("", &["Соус дня", "Хлеб", "Приборы"]),
];

fn entity_id(rng: &mut StdRng) -> EntityId {
    let text: String = (0..24)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
        .collect();
    EntityId::parse(&text).unwrap_or_else(|_| unreachable!("24 hex digits form an entity id"))
}

/// Generates a dictionary set: `users` users and `restaurants` restaurants with 5–15 menu items
/// across several categories, one of them without a category.
pub fn synthetic(seed: u64, users: usize, restaurants: usize) -> Dictionary {
    let mut rng = StdRng::seed_from_u64(seed);
    let now = Timestamp::from_datetime(chrono::Utc::now());
    let users = (0..users)
        .map(|i| {
            let first = FIRST_NAMES.choose(&mut rng).copied().unwrap_or("Анна");
            let last = LAST_NAMES.choose(&mut rng).copied().unwrap_or("Иванова");
            User {
                id: entity_id(&mut rng),
                name: format!("{first} {last}"),
                login: format!("user{i:04}"),
                update_ts_utc: now,
            }
        })
        .collect();
    let restaurants = (0..restaurants)
        .map(|i| {
            let size = rng.random_range(5..=15);
            let mut menu: Vec<MenuItem> = Vec::with_capacity(size);
            // Every third restaurant (the first among them) has an item without a category,
            // as real menus do.
            if i % 3 == 0 {
                let (_, uncategorised) = DISHES[DISHES.len() - 1];
                menu.push(menu_item(&mut rng, "", uncategorised));
            }
            while menu.len() < size {
                let categorised = &DISHES[..DISHES.len() - 1];
                let (category, dishes) = categorised.choose(&mut rng).copied().unwrap_or(DISHES[0]);
                menu.push(menu_item(&mut rng, category, dishes));
            }
            Restaurant {
                id: entity_id(&mut rng),
                name: RESTAURANTS
                    .get(i)
                    .map_or_else(|| format!("Ресторан №{i}"), |name| (*name).to_owned()),
                menu,
                update_ts_utc: now,
            }
        })
        .collect();
    Dictionary { users, restaurants }
}

fn menu_item(rng: &mut StdRng, category: &str, dishes: &[&str]) -> MenuItem {
    MenuItem {
        id: entity_id(rng),
        name: dishes.choose(rng).copied().unwrap_or("Блюдо").to_owned(),
        price: Amount::from_i64(rng.random_range(5..=90) * 10),
        category: category.to_owned(),
    }
}

/// Reads every dictionary entry Redis holds (keys that decode as a user or a restaurant).
pub async fn load(pool: &RedisPool) -> anyhow::Result<Dictionary> {
    let mut conn = pool.get().await?;
    let mut keys: Vec<String> = Vec::new();
    {
        let mut iter: redis::AsyncIter<String> = conn.scan().await?;
        while let Some(key) = iter.next_item().await {
            let key = key?;
            if EntityId::parse(&key).is_ok() {
                keys.push(key);
            }
        }
    }
    let mut dictionary = Dictionary::default();
    for chunk in keys.chunks(500) {
        let values: Vec<Option<String>> = conn.mget(chunk).await?;
        for value in values.into_iter().flatten() {
            if let Ok(restaurant) = decode::restaurant(value.as_bytes()) {
                dictionary.restaurants.push(restaurant);
            } else if let Ok(user) = decode::user(value.as_bytes()) {
                dictionary.users.push(user);
            }
        }
    }
    dictionary.users.sort_by(|a, b| a.id.cmp(&b.id));
    dictionary.restaurants.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(dictionary)
}

/// Writes a dictionary to Redis (key = id, value = JSON), never overwriting an existing key,
/// in one transaction: service-stg never sees a half-written set (it would take a missing
/// entry of a set being loaded for an unknown user).
pub async fn store(pool: &RedisPool, dictionary: &Dictionary) -> anyhow::Result<()> {
    let mut entries: HashMap<String, String> = HashMap::new();
    for user in &dictionary.users {
        entries.insert(user.id.to_string(), serde_json::to_string(user)?);
    }
    for restaurant in &dictionary.restaurants {
        entries.insert(
            restaurant.id.to_string(),
            serde_json::to_string(restaurant)?,
        );
    }
    if entries.is_empty() {
        return Ok(());
    }
    let mut conn = pool.get().await?;
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (key, value) in &entries {
        pipe.set_nx(key, value).ignore();
    }
    let () = pipe.query_async(&mut *conn).await?;
    Ok(())
}

/// The dictionary to generate from: what Redis holds, or a synthetic set written there first
/// when it holds none.
pub async fn load_or_seed(pool: &RedisPool, seed: u64) -> anyhow::Result<Dictionary> {
    let existing = load(pool).await?;
    if existing.is_usable() {
        tracing::info!(
            users = existing.users.len(),
            restaurants = existing.restaurants.len(),
            "Using the dictionaries found in Redis."
        );
        return Ok(existing);
    }
    let synthetic = synthetic(seed, 120, 12);
    store(pool, &synthetic).await?;
    tracing::info!(
        users = synthetic.users.len(),
        restaurants = synthetic.restaurants.len(),
        "Redis held no dictionaries; loaded a synthetic set."
    );
    Ok(synthetic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synthetic_set_meets_the_contract() {
        let d = synthetic(7, 120, 12);
        assert!(d.users.len() >= 100);
        assert!(d.restaurants.len() >= 10);
        for restaurant in &d.restaurants {
            assert!(
                (5..=15).contains(&restaurant.menu.len()),
                "{}",
                restaurant.menu.len()
            );
        }
        let categories: std::collections::BTreeSet<&str> = d
            .restaurants
            .iter()
            .flat_map(|r| r.menu.iter().map(|m| m.category.as_str()))
            .collect();
        assert!(categories.contains(""));
        assert!(categories.len() >= 4, "{categories:?}");
    }

    #[test]
    fn the_synthetic_set_is_reproducible_from_its_seed() {
        assert_eq!(
            synthetic(7, 10, 3).users[3].id,
            synthetic(7, 10, 3).users[3].id
        );
        assert_ne!(
            synthetic(7, 10, 3).users[3].id,
            synthetic(8, 10, 3).users[3].id
        );
    }

    #[test]
    fn synthetic_entries_decode_as_dictionary_entries() {
        let d = synthetic(1, 3, 2);
        let user = serde_json::to_vec(&d.users[0]).expect("json");
        assert_eq!(decode::user(&user).expect("user"), d.users[0]);
        let restaurant = serde_json::to_vec(&d.restaurants[0]).expect("json");
        assert_eq!(
            decode::restaurant(&restaurant).expect("restaurant"),
            d.restaurants[0]
        );
    }
}
