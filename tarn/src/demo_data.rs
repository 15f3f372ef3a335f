//! The demo's data set: a month of an e-commerce shop, made deterministically from a
//! seed. Customers, products, the sessions' click streams (views, carts, removals,
//! checkouts; most carts are abandoned, more so at weekends and in some categories),
//! and the purchases the checkouts made: the seed's `customer-data/` (`customer_id`,
//! `purchase_amount`). One parquet file per day for events and purchases, as daily logs
//! arrive; one each for customers and products.
//!
//! Every value comes from a counter-based hash of (seed, stream, index), so a file's
//! bytes depend only on the seed and the size, not on the order files are made in, and
//! they never change between versions of a random-number crate. Only exactly rounded
//! float operations are used (+, *, sqrt: no `powf`, whose precision is the platform's).

use std::sync::Arc;

use anyhow::Context;
use datafusion::arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;

/// The month the data covers: November 2026 (day 0 is 2026-11-01, a Sunday).
pub const DAYS: u32 = 30;
/// 2026-11-01 as days since 1970-01-01.
const FIRST_DAY: i32 = 20_758;

pub const CATEGORIES: [&str; 12] = [
    "electronics",
    "phones",
    "accessories",
    "books",
    "toys",
    "home",
    "kitchen",
    "garden",
    "sports",
    "beauty",
    "fashion",
    "groceries",
];

/// How often a cart in each category ends in a checkout (weekdays; weekends less).
const CHECKOUT_RATE: [f64; 12] = [0.30, 0.28, 0.45, 0.55, 0.40, 0.38, 0.42, 0.35, 0.33, 0.50, 0.25, 0.72];

/// Base prices by category (cents); a product's price scatters around it.
const BASE_PRICE: [i64; 12] = [34_900, 59_900, 1_999, 1_499, 2_499, 4_999, 3_499, 2_999, 3_999, 1_799, 4_499, 599];

const NOUNS: [[&str; 4]; 12] = [
    ["Laptop", "Monitor", "Headphones", "Speaker"],
    ["Phone", "Smartphone", "Flip Phone", "Phone Pro"],
    ["Charger", "Case", "Cable", "Screen Guard"],
    ["Novel", "Cookbook", "Atlas", "Biography"],
    ["Puzzle", "Robot Kit", "Doll", "Board Game"],
    ["Lamp", "Rug", "Cushion", "Shelf"],
    ["Kettle", "Pan", "Knife Set", "Blender"],
    ["Hose", "Planter", "Shears", "Seed Mix"],
    ["Yoga Mat", "Dumbbells", "Ball", "Bottle"],
    ["Serum", "Shampoo", "Lipstick", "Cream"],
    ["Jacket", "Sneakers", "Scarf", "Jeans"],
    ["Coffee", "Tea", "Olive Oil", "Chocolate"],
];
const ADJECTIVES: [&str; 8] = ["Classic", "Ultra", "Eco", "Compact", "Deluxe", "Smart", "Travel", "Pro"];
const FIRST_NAMES: [&str; 16] = [
    "Ada", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Liam", "Mei", "Nora",
    "Omar", "Priya",
];
const LAST_NAMES: [&str; 16] = [
    "Andersen", "Baker", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito", "Jensen", "Kowalski",
    "Larsen", "Moreau", "Nakamura", "Okafor", "Patel",
];
const COUNTRIES: [&str; 8] = ["US", "DE", "FR", "GB", "NO", "JP", "BR", "IN"];
const SEGMENTS: [&str; 3] = ["consumer", "small_business", "corporate"];
const PAYMENTS: [&str; 4] = ["card", "paypal", "bank_transfer", "gift_card"];

/// The data set's shape, derived from a target size.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub seed: u64,
    pub customers: u64,
    pub products: u64,
    pub sessions_per_day: u64,
}

/// Sessions per day for each MB asked (measured: about 1 MB of snappy parquet per 9,200
/// sessions, their events and purchases together).
const SESSIONS_PER_MB: f64 = 9_200.0 / DAYS as f64;

impl Shape {
    /// About `mb` megabytes of parquet (at least a few thousand rows).
    pub fn for_size(mb: f64, seed: u64) -> Shape {
        let sessions_per_day = ((mb * SESSIONS_PER_MB).round() as u64).max(200);
        Shape {
            seed,
            customers: (sessions_per_day * DAYS as u64 / 12).max(100),
            products: (400 + sessions_per_day / 10).min(20_000),
            sessions_per_day,
        }
    }
}

/// SplitMix64's finalizer: a well-mixed 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A deterministic stream of random numbers for one (seed, stream, key).
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64, key: u64) -> Rng {
        Rng(mix(mix(seed ^ stream.wrapping_mul(0xa076_1d64_78bd_642f)) ^ key))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

const S_CUSTOMER: u64 = 1;
const S_PRODUCT: u64 = 2;
const S_SESSION: u64 = 3;

/// A product's category (products are dealt round the categories).
pub fn category_of(product_id: i64) -> usize {
    ((product_id - 1) % CATEGORIES.len() as i64) as usize
}

/// The product bought with `p` more often than chance: one of a neighbouring category's
/// (a phone's case, a laptop's bag), fixed per product.
fn companion(shape: &Shape, p: i64) -> i64 {
    let mut r = Rng::new(shape.seed, S_PRODUCT ^ 0x55, p as u64);
    let cat = (category_of(p) + 1 + r.below(2) as usize) % CATEGORIES.len();
    product_in(shape, cat, &mut r)
}

/// A product of category `cat`, the popular ones (low ranks) more often.
fn product_in(shape: &Shape, cat: usize, r: &mut Rng) -> i64 {
    let per_cat = (shape.products / CATEGORIES.len() as u64).max(1);
    let u = r.unit();
    let rank = ((per_cat as f64) * u * u) as u64;
    (rank.min(per_cat - 1) * CATEGORIES.len() as u64 + cat as u64 + 1) as i64
}

/// A product's price in cents.
fn price_of(shape: &Shape, p: i64) -> i64 {
    let mut r = Rng::new(shape.seed, S_PRODUCT, p as u64);
    let base = BASE_PRICE[category_of(p)] as f64;
    let cents = (base * (0.4 + 1.4 * r.unit())) as i64;
    (cents / 100) * 100 + 99
}

fn props() -> WriterProperties {
    WriterProperties::builder().set_compression(Compression::SNAPPY).build()
}

fn parquet(batch: RecordBatch) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props())).context("parquet writer")?;
    w.write(&batch).context("write parquet")?;
    w.close().context("finish parquet")?;
    Ok(out)
}

fn decimal(precision: u8) -> DataType {
    DataType::Decimal128(precision, 2)
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `customers.parquet`.
pub fn customers(shape: &Shape) -> anyhow::Result<Vec<u8>> {
    let n = shape.customers as usize;
    let (mut id, mut name, mut email) = (Int64Builder::new(), StringBuilder::new(), StringBuilder::new());
    let (mut country, mut signup, mut segment) = (StringBuilder::new(), Date32Builder::new(), StringBuilder::new());
    for c in 1..=n as u64 {
        let mut r = Rng::new(shape.seed, S_CUSTOMER, c);
        let (f, l) = (FIRST_NAMES[r.below(16) as usize], LAST_NAMES[r.below(16) as usize]);
        id.append_value(c as i64);
        name.append_value(format!("{f} {l}"));
        // Some customers never gave an address: nulls, as real exports have.
        if r.chance(0.05) {
            email.append_null();
        } else {
            email.append_value(format!("{}.{}{c}@example.com", f.to_lowercase(), l.to_lowercase()));
        }
        country.append_value(COUNTRIES[r.below(COUNTRIES.len() as u64) as usize]);
        signup.append_value(FIRST_DAY - 1 - r.below(3 * 365) as i32);
        let u = r.unit();
        segment.append_value(SEGMENTS[(u * u * u * 3.0) as usize]);
    }
    let schema = Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("email", DataType::Utf8, true),
        Field::new("country", DataType::Utf8, false),
        Field::new("signup_date", DataType::Date32, false),
        Field::new("segment", DataType::Utf8, false),
    ]);
    let cols: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(name.finish()),
        Arc::new(email.finish()),
        Arc::new(country.finish()),
        Arc::new(signup.finish()),
        Arc::new(segment.finish()),
    ];
    parquet(RecordBatch::try_new(Arc::new(schema), cols)?)
}

/// `products.parquet`.
pub fn products(shape: &Shape) -> anyhow::Result<Vec<u8>> {
    let (mut id, mut name, mut category) = (Int64Builder::new(), StringBuilder::new(), StringBuilder::new());
    let mut price = Decimal128Builder::new().with_data_type(decimal(10));
    for p in 1..=shape.products as i64 {
        let mut r = Rng::new(shape.seed, S_PRODUCT ^ 0x77, p as u64);
        let cat = category_of(p);
        id.append_value(p);
        let noun = NOUNS[cat][r.below(4) as usize];
        name.append_value(format!("{} {noun} {p}", ADJECTIVES[r.below(8) as usize]));
        category.append_value(CATEGORIES[cat]);
        price.append_value(price_of(shape, p) as i128);
    }
    let schema = Schema::new(vec![
        Field::new("product_id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("price", decimal(10), false),
    ]);
    let cols: Vec<ArrayRef> =
        vec![Arc::new(id.finish()), Arc::new(name.finish()), Arc::new(category.finish()), Arc::new(price.finish())];
    parquet(RecordBatch::try_new(Arc::new(schema), cols)?)
}

/// One day's files: the sessions' events and the purchases of their checkouts.
pub struct Day {
    pub date: String,
    pub events: Vec<u8>,
    pub purchases: Vec<u8>,
    pub event_rows: usize,
    pub purchase_rows: usize,
}

#[derive(Default)]
struct Events {
    event_id: Int64Builder,
    session_id: Int64Builder,
    customer_id: Int64Builder,
    event_time: TimestampMicrosecondBuilder,
    event_date: Date32Builder,
    event_type: StringBuilder,
    product_id: Int64Builder,
    quantity: Int32Builder,
    rows: usize,
    /// The current session and its events so far (event ids are session * 100 + n).
    session: i64,
    seq: i64,
}

impl Events {
    #[allow(clippy::too_many_arguments)]
    fn push(&mut self, session: i64, customer: i64, t: i64, date: i32, kind: &str, p: Option<i64>, q: Option<i32>) {
        if session != self.session {
            (self.session, self.seq) = (session, 0);
        }
        self.event_id.append_value(session * 100 + self.seq);
        self.seq += 1;
        self.session_id.append_value(session);
        self.customer_id.append_value(customer);
        self.event_time.append_value(t);
        self.event_date.append_value(date);
        self.event_type.append_value(kind);
        self.product_id.append_option(p);
        self.quantity.append_option(q);
        self.rows += 1;
    }
}

/// Day `d` (0-based) of the month.
pub fn day(shape: &Shape, d: u32) -> anyhow::Result<Day> {
    let date = FIRST_DAY + d as i32;
    let weekend = matches!(d % 7, 0 | 6);
    let day_start_us = date as i64 * 86_400_000_000;
    let mut ev = Events::default();
    let (mut tx_id, mut order_id, mut tx_customer) = (Int64Builder::new(), Int64Builder::new(), Int64Builder::new());
    let (mut tx_product, mut tx_qty) = (Int64Builder::new(), Int32Builder::new());
    let mut unit_price = Decimal128Builder::new().with_data_type(decimal(10));
    let mut amount = Decimal128Builder::new().with_data_type(decimal(12));
    let (mut tx_time, mut tx_date) = (TimestampMicrosecondBuilder::new().with_timezone("UTC"), Date32Builder::new());
    let mut payment = StringBuilder::new();
    let mut purchase_rows = 0usize;
    // More sessions at weekends.
    let sessions = if weekend { shape.sessions_per_day * 6 / 5 } else { shape.sessions_per_day };
    for s in 0..sessions {
        let session = (d as i64 + 1) * 1_000_000_000 + s as i64;
        let mut r = Rng::new(shape.seed, S_SESSION, session as u64);
        // A few customers come back very often: their totals lead the seed's ranking.
        let u = r.unit();
        let customer = ((shape.customers as f64 * u * u.sqrt()) as i64).min(shape.customers as i64 - 1) + 1;
        let cat = r.below(CATEGORIES.len() as u64) as usize;
        let mut t = day_start_us + r.below(86_400) as i64 * 1_000_000;
        let mut cart: Vec<(i64, i32)> = Vec::new();
        let views = 1 + r.below(6);
        for _ in 0..views {
            let p = product_in(shape, cat, &mut r);
            ev.push(session, customer, t, date, "view", Some(p), None);
            t += (20 + r.below(100) as i64) * 1_000_000;
            if r.chance(0.35) {
                let u = r.unit();
                let q = 1 + (u * u * u * 3.0) as i32;
                ev.push(session, customer, t, date, "add_to_cart", Some(p), Some(q));
                t += (5 + r.below(30) as i64) * 1_000_000;
                cart.push((p, q));
                if r.chance(0.45) {
                    let c = companion(shape, p);
                    ev.push(session, customer, t, date, "add_to_cart", Some(c), Some(1));
                    t += (5 + r.below(30) as i64) * 1_000_000;
                    cart.push((c, 1));
                }
            }
        }
        if cart.len() > 1 && r.chance(0.15) {
            let (p, q) = cart.remove(r.below(cart.len() as u64) as usize);
            ev.push(session, customer, t, date, "remove_from_cart", Some(p), Some(q));
            t += (5 + r.below(30) as i64) * 1_000_000;
        }
        if cart.is_empty() {
            continue;
        }
        let rate = CHECKOUT_RATE[cat] - if weekend { 0.10 } else { 0.0 } - 0.03 * (cart.len() as f64 - 1.0);
        if !r.chance(rate) {
            continue; // abandoned
        }
        ev.push(session, customer, t, date, "checkout", None, None);
        let u = r.unit();
        let pay = PAYMENTS[(u * u * 4.0) as usize];
        for (i, (p, q)) in cart.iter().enumerate() {
            let price = price_of(shape, *p);
            tx_id.append_value(session * 100 + i as i64);
            order_id.append_value(session);
            tx_customer.append_value(customer);
            tx_product.append_value(*p);
            tx_qty.append_value(*q);
            unit_price.append_value(price as i128);
            amount.append_value((price * *q as i64) as i128);
            tx_time.append_value(t);
            tx_date.append_value(date);
            payment.append_value(pay);
            purchase_rows += 1;
        }
    }
    let ts = ts_type();
    let ev_schema = Schema::new(vec![
        Field::new("event_id", DataType::Int64, false),
        Field::new("session_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, false),
        Field::new("event_time", ts.clone(), false),
        Field::new("event_date", DataType::Date32, false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("product_id", DataType::Int64, true),
        Field::new("quantity", DataType::Int32, true),
    ]);
    let event_rows = ev.rows;
    let mut e = ev;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(e.event_id.finish()),
        Arc::new(e.session_id.finish()),
        Arc::new(e.customer_id.finish()),
        Arc::new(e.event_time.finish().with_timezone("UTC")),
        Arc::new(e.event_date.finish()),
        Arc::new(e.event_type.finish()),
        Arc::new(e.product_id.finish()),
        Arc::new(e.quantity.finish()),
    ];
    let events = parquet(RecordBatch::try_new(Arc::new(ev_schema), cols)?)?;
    let tx_schema = Schema::new(vec![
        Field::new("transaction_id", DataType::Int64, false),
        Field::new("order_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, false),
        Field::new("product_id", DataType::Int64, false),
        Field::new("quantity", DataType::Int32, false),
        Field::new("unit_price", decimal(10), false),
        Field::new("purchase_amount", decimal(12), false),
        Field::new("purchase_time", ts, false),
        Field::new("purchase_date", DataType::Date32, false),
        Field::new("payment_method", DataType::Utf8, false),
    ]);
    let cols: Vec<ArrayRef> = vec![
        Arc::new(tx_id.finish()),
        Arc::new(order_id.finish()),
        Arc::new(tx_customer.finish()),
        Arc::new(tx_product.finish()),
        Arc::new(tx_qty.finish()),
        Arc::new(unit_price.finish()),
        Arc::new(amount.finish()),
        Arc::new(tx_time.finish()),
        Arc::new(tx_date.finish()),
        Arc::new(payment.finish()),
    ];
    let purchases = parquet(RecordBatch::try_new(Arc::new(tx_schema), cols)?)?;
    let date = chrono::NaiveDate::from_ymd_opt(2026, 11, 1 + d).map(|x| x.to_string()).unwrap_or_default();
    Ok(Day { date, events, purchases, event_rows, purchase_rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_bytes_and_another_seed_other_bytes() {
        let a = Shape::for_size(0.5, 7);
        let d1 = day(&a, 3).unwrap();
        let d2 = day(&a, 3).unwrap();
        assert_eq!(d1.events, d2.events);
        assert_eq!(d1.purchases, d2.purchases);
        assert!(d1.event_rows > 500 && d1.purchase_rows > 50, "{} {}", d1.event_rows, d1.purchase_rows);
        assert_eq!(d1.date, "2026-11-04");
        let b = day(&Shape::for_size(0.5, 8), 3).unwrap();
        assert_ne!(d1.events, b.events);
        assert_eq!(customers(&a).unwrap(), customers(&a).unwrap());
    }

    #[test]
    fn day_zero_is_the_first_of_november_2026() {
        assert_eq!(
            chrono::NaiveDate::from_num_days_from_ce_opt(FIRST_DAY + 719_163).unwrap().to_string(),
            "2026-11-01"
        );
    }

    #[test]
    fn products_keep_to_their_category_and_companions_to_a_neighbour() {
        let s = Shape::for_size(10.0, 1);
        let mut r = Rng::new(1, 9, 9);
        for _ in 0..1000 {
            let cat = r.below(12) as usize;
            let p = product_in(&s, cat, &mut r);
            assert!(p >= 1 && p as u64 <= s.products, "{p}");
            assert_eq!(category_of(p), cat);
            let c = companion(&s, p);
            assert!(c >= 1 && c as u64 <= s.products);
            assert_ne!(category_of(c), cat);
        }
    }
}
