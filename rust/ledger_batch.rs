//! A batch of usage records as the SQLite ledger stores it: one JSON array of the records (each
//! an array of its fields in order) and the batch's sums per UTC day and attribution, the rows it
//! adds to the daily rollups.
//!
//! Python decides (usage/ledger.py, usage/_schema.py): the fields, which of them attribute a
//! rollup and which are summed, the statements. This only reads values and writes bytes. One row
//! a batch is what makes the ledger cheap on the gateway's core: SQLite spent ~12,800
//! instructions a record inserting 30 columns and an index entry (its VDBE runs a few hundred
//! instructions a column), and ~1,400 storing the same record as ~280 bytes of a batch's text.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use crate::accounting::Fnv;

use crate::ledger::push_utc_day;

/// One field's value, as read from the row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Real(f64),
    Text(&'a str),
    /// A value of a type the ledger does not store (refused).
    Other,
}

impl Val<'_> {
    fn as_i64(&self) -> i64 {
        match *self {
            Val::Int(v) => v,
            Val::Bool(b) => i64::from(b),
            Val::Real(v) => v as i64,
            _ => 0,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match *self {
            Val::Int(v) => Some(v as f64),
            Val::Real(v) => Some(v),
            Val::Bool(b) => Some(f64::from(u8::from(b))),
            _ => None,
        }
    }
}

/// Which fields a rollup row is keyed by and which it sums (indexes into a record).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RollupSpec {
    pub dims: Vec<usize>,
    /// The status: a record counts as an error from 400 on.
    pub status: usize,
    pub int_sums: Vec<usize>,
    pub real_sums: Vec<usize>,
    /// Sums of a field that may be null, with the count of records that had it.
    pub opt_sums: Vec<usize>,
}

/// A rollup row's sums, in the order the upsert binds them after the day and the dimensions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sums {
    pub requests: i64,
    pub errors: i64,
    pub ints: Vec<i64>,
    pub reals: Vec<f64>,
    pub opts: Vec<(f64, i64)>,
}

/// What a batch row and its rollups are made of.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    /// `[[...],[...]]`: valid UTF-8, written only from `&str` and ASCII.
    pub records: Vec<u8>,
    pub n: usize,
    /// The first record's time and request id: the batch's key, so a retried batch adds nothing.
    pub first_ts: f64,
    pub first_id: String,
    pub ts_min: f64,
    pub ts_max: f64,
    /// (day, then each dimension's text, "" for none) and its sums, in first-seen order.
    pub rollups: Vec<(Vec<String>, Sums)>,
}

/// Why a record cannot be stored: a required field is missing (the store's NOT NULL constraint,
/// IntegrityError to callers) or a value is not one it stores (ProgrammingError).
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    Missing(String),
    Bad(String),
    /// An int past 64 bits (OverflowError to callers, as the sqlite3 module raises).
    TooBig(String),
}

impl From<&str> for Refusal {
    fn from(msg: &str) -> Self {
        Refusal::Bad(msg.to_owned())
    }
}

impl From<String> for Refusal {
    fn from(msg: String) -> Self {
        Refusal::Bad(msg)
    }
}

/// Years 1-9999 only: past them a day would not be a date.
const TS_RANGE: std::ops::Range<f64> = -62_135_596_800.0..253_402_300_800.0;

/// Builds a batch record by record (`record`: a record's values and their text).
#[derive(Clone)]
pub struct BatchBuilder {
    width: usize,
    id_field: usize,
    /// By field: null is refused (the store's NOT NULL).
    required: Vec<bool>,
    spec: RollupSpec,
    batch: Batch,
    // The record being read: its rollup key (day and dimensions, 0xFF after each: a byte UTF-8
    // never has) and sums, and where its text began (to take it back out on an error).
    key: Vec<u8>,
    sums: Sums,
    record_start: usize,
    ts: f64,
    // [start, end) of the UTC day last formatted, and its name.
    day: (f64, f64, String),
    index: HashMap<Vec<u8>, usize, BuildHasherDefault<Fnv>>,
}

impl BatchBuilder {
    pub fn new(
        width: usize,
        id_field: usize,
        required: &[usize],
        spec: RollupSpec,
    ) -> Result<Self, String> {
        // Every index the record is read at (`apply` reads them without asking again).
        let field = |i: usize, what: &str| {
            if i < width {
                Ok(i)
            } else {
                Err(format!("{what}: field {i} of a record of {width}"))
            }
        };
        field(id_field, "the request id")?;
        let mut is_required = vec![false; width];
        for &i in required {
            if let Some(r) = is_required.get_mut(field(i, "a required field")?) {
                *r = true;
            }
        }
        for &i in &spec.dims {
            field(i, "a dimension")?;
        }
        field(spec.status, "the status")?;
        for (what, sums) in [
            ("an int sum", &spec.int_sums),
            ("a real sum", &spec.real_sums),
            ("an optional sum", &spec.opt_sums),
        ] {
            for &i in sums {
                field(i, what)?;
            }
        }
        if width == 0 {
            return Err("width: at least the unix time is needed".into());
        }
        let sums = Self::zero(&spec);
        let mut batch = Batch::default();
        batch.records.push(b'[');
        Ok(BatchBuilder {
            width,
            id_field,
            required: is_required,
            spec,
            batch,
            key: Vec::new(),
            sums,
            record_start: 1,
            ts: 0.0,
            day: (0.0, -1.0, String::new()),
            index: HashMap::default(),
        })
    }

    fn zero(spec: &RollupSpec) -> Sums {
        Sums {
            requests: 1,
            errors: 0,
            ints: vec![0; spec.int_sums.len()],
            reals: vec![0.0; spec.real_sums.len()],
            opts: vec![(0.0, 0); spec.opt_sums.len()],
        }
    }

    /// Room for `bytes` more of the batch's text.
    pub fn reserve_text(&mut self, bytes: usize) {
        self.batch.records.reserve(bytes);
    }

    /// Records in the batch so far.
    pub fn len(&self) -> usize {
        self.batch.n
    }

    pub fn is_empty(&self) -> bool {
        self.batch.n == 0
    }

    /// One record: its values in field order and their text (record_text.rs, written from the
    /// same values). A refusal leaves the batch as it was.
    pub fn record(&mut self, vals: &[Val<'_>], text: &[u8]) -> Result<(), Refusal> {
        if vals.len() != self.width {
            let msg = format!("a record of {} values, not {}", vals.len(), self.width);
            return Err(Refusal::Bad(msg));
        }
        // Every field first (a refusal here has nothing to take back); then the rollup's own
        // fields, each read once by what it is for: most of a record is only its text.
        for (i, (&v, &required)) in vals.iter().zip(&self.required).enumerate() {
            Self::check(i, required, v)?;
        }
        self.begin();
        self.batch.records.extend_from_slice(text);
        if let Err(why) = self.apply(vals) {
            self.cancel();
            return Err(why);
        }
        self.end();
        Ok(())
    }

    fn begin(&mut self) {
        self.record_start = self.batch.records.len();
        if self.batch.n > 0 {
            self.batch.records.push(b',');
        }
        self.batch.records.push(b'[');
        self.key.clear();
        // (`apply` sets every sum: a record costs no allocation unless it starts a rollup row.)
        (self.sums.requests, self.sums.errors) = (1, 0);
    }

    /// Takes back the record begun (its text so far): the batch is as before `begin`.
    fn cancel(&mut self) {
        self.batch.records.truncate(self.record_start);
    }

    /// What any field may not be: null (or a NaN or infinity) when required, or of a type the
    /// ledger does not store.
    fn check(i: usize, required: bool, v: Val<'_>) -> Result<(), Refusal> {
        let null = match v {
            Val::Null => true,
            Val::Real(x) => !x.is_finite(),
            Val::Other => {
                return Err(format!("field {i}: a value of a type it does not store").into())
            }
            _ => false,
        };
        // The time has its own check (`apply`).
        if required && null && i != 0 {
            return Err(Refusal::Missing(format!("record field {i}")));
        }
        Ok(())
    }

    /// The fields that are more than written: the time, the request id, the rollup's dimensions
    /// and sums, the status (`new` checked every index against the width).
    fn apply(&mut self, vals: &[Val<'_>]) -> Result<(), Refusal> {
        let at = |i: usize| vals.get(i).copied().unwrap_or(Val::Null);
        let t = at(0);
        let ts = t
            .as_f64()
            .filter(|ts| !matches!(t, Val::Bool(_)) && TS_RANGE.contains(ts))
            .ok_or("the first field (the unix time) is not a time in years 1-9999")?;
        self.time(ts);
        let Val::Text(id) = at(self.id_field) else {
            return Err("the request id is not a text".into());
        };
        if self.batch.n == 0 {
            self.batch.first_id.clear();
            self.batch.first_id.push_str(id);
        }
        for &i in &self.spec.dims {
            match at(i) {
                Val::Text(s) => self.key.extend_from_slice(s.as_bytes()),
                Val::Null => {}
                _ => return Err(format!("field {i} attributes a rollup and is not a text").into()),
            }
            self.key.push(0xFF);
        }
        let sums = &mut self.sums;
        if at(self.spec.status).as_i64() >= 400 {
            sums.errors = 1;
        }
        for (s, &i) in sums.ints.iter_mut().zip(&self.spec.int_sums) {
            *s = at(i).as_i64();
        }
        for (s, &i) in sums.reals.iter_mut().zip(&self.spec.real_sums) {
            *s = at(i).as_f64().unwrap_or(0.0);
        }
        for (s, &i) in sums.opts.iter_mut().zip(&self.spec.opt_sums) {
            *s = at(i).as_f64().map_or((0.0, 0), |x| (x, 1));
        }
        Ok(())
    }

    fn time(&mut self, ts: f64) {
        self.ts = ts;
        if !(self.day.0 <= ts && ts < self.day.1) {
            let start = (ts / 86400.0).floor() * 86400.0;
            self.day.2.clear();
            push_utc_day(ts, &mut self.day.2);
            (self.day.0, self.day.1) = (start, start + 86400.0);
        }
        // The day leads the key (the dimensions follow as their fields come).
        self.key.extend_from_slice(self.day.2.as_bytes());
        self.key.push(0xFF);
    }

    /// The record is complete: it joins the batch and its rollup.
    fn end(&mut self) {
        let (b, ts) = (&mut self.batch, self.ts);
        if b.n == 0 {
            (b.first_ts, b.ts_min, b.ts_max) = (ts, ts, ts);
        } else {
            b.ts_min = b.ts_min.min(ts);
            b.ts_max = b.ts_max.max(ts);
        }
        b.records.push(b']');
        b.n += 1;
        let sums = &self.sums;
        match self.index.get(self.key.as_slice()) {
            Some(&at) => {
                if let Some((_, total)) = self.batch.rollups.get_mut(at) {
                    add(total, sums);
                }
            }
            None => {
                let dims = self
                    .key
                    .split(|&b| b == 0xFF)
                    .take(self.spec.dims.len() + 1)
                    .map(|part| String::from_utf8_lossy(part).into_owned())
                    .collect();
                self.index
                    .insert(self.key.clone(), self.batch.rollups.len());
                self.batch.rollups.push((dims, sums.clone()));
            }
        }
    }

    pub fn finish(mut self) -> Batch {
        self.batch.records.push(b']');
        self.batch
    }
}

fn add(total: &mut Sums, one: &Sums) {
    total.requests += one.requests;
    total.errors += one.errors;
    for (t, v) in total.ints.iter_mut().zip(&one.ints) {
        *t = t.saturating_add(*v);
    }
    for (t, v) in total.reals.iter_mut().zip(&one.reals) {
        *t += v;
    }
    for (t, v) in total.opts.iter_mut().zip(&one.opts) {
        t.0 += v.0;
        t.1 += v.1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_text::RecordText;

    fn spec() -> RollupSpec {
        // Records of (ts, id, key, status, tokens, cost, upstream cost).
        RollupSpec {
            dims: vec![2],
            status: 3,
            int_sums: vec![4],
            real_sums: vec![5],
            opt_sums: vec![6],
        }
    }

    fn record(b: &mut BatchBuilder, vals: &[Val<'_>]) -> Result<(), Refusal> {
        let mut text = RecordText::default();
        text.write(vals, None);
        b.record(vals, text.text())
    }

    /// A good record of (ts, id, key, status, tokens, cost, upstream cost) with field `i` as `v`.
    fn with(i: usize, v: Val<'static>) -> [Val<'static>; 7] {
        let mut r = [
            Val::Real(2.0),
            Val::Text("r2"),
            Val::Text("k"),
            Val::Int(200),
            Val::Int(1),
            Val::Real(0.0),
            Val::Null,
        ];
        r[i] = v;
        r
    }

    #[test]
    fn records_become_one_json_array_and_sums_per_day_and_key() {
        let mut b = BatchBuilder::new(7, 1, &[3], spec()).unwrap_or_else(|e| unreachable!("{e}"));
        let rows = [
            [
                Val::Real(86_400.5),
                Val::Text("r1"),
                Val::Text("k\"1"),
                Val::Int(200),
                Val::Int(10),
                Val::Real(0.5),
                Val::Null,
            ],
            [
                Val::Real(86_401.0),
                Val::Text("r2"),
                Val::Text("k\"1"),
                Val::Int(429),
                Val::Int(5),
                Val::Real(0.25),
                Val::Real(0.1),
            ],
            [
                Val::Real(86_399.0),
                Val::Text("r3"),
                Val::Null,
                Val::Int(200),
                Val::Bool(true),
                Val::Int(1),
                Val::Null,
            ],
        ];
        for r in &rows {
            assert_eq!(record(&mut b, r), Ok(()));
        }
        let batch = b.finish();
        let text = String::from_utf8(batch.records).unwrap_or_default();
        assert_eq!(
            text,
            r#"[[86400.5,"r1","k\"1",200,10,0.5,null],[86401.0,"r2","k\"1",429,5,0.25,0.1],[86399.0,"r3",null,200,true,1,null]]"#
        );
        assert_eq!((batch.n, batch.first_id.as_str()), (3, "r1"));
        assert_eq!(
            (batch.first_ts, batch.ts_min, batch.ts_max),
            (86_400.5, 86_399.0, 86_401.0)
        );
        let k1 = Sums {
            requests: 2,
            errors: 1,
            ints: vec![15],
            reals: vec![0.75],
            opts: vec![(0.1, 1)],
        };
        let none = Sums {
            requests: 1,
            errors: 0,
            ints: vec![1],
            reals: vec![1.0],
            opts: vec![(0.0, 0)],
        };
        assert_eq!(
            batch.rollups,
            vec![
                (vec!["1970-01-02".to_owned(), "k\"1".to_owned()], k1),
                (vec!["1970-01-01".to_owned(), String::new()], none),
            ]
        );
    }

    #[test]
    fn a_bad_record_leaves_the_batch_as_it_was() {
        let mut b = BatchBuilder::new(7, 1, &[3], spec()).unwrap_or_else(|e| unreachable!("{e}"));
        let good = [
            Val::Real(1.0),
            Val::Text("r1"),
            Val::Text("k"),
            Val::Int(200),
            Val::Int(1),
            Val::Real(0.0),
            Val::Null,
        ];
        assert_eq!(record(&mut b, &good), Ok(()));
        let bad = [
            with(0, Val::Text("x")),    // no time
            with(0, Val::Real(-1e300)), // a time before year 1
            with(1, Val::Int(7)),       // no request id
            with(2, Val::Int(3)),       // a dimension that is not a text
            with(4, Val::Other),        // a type it does not store
            with(6, Val::Other),        // the same in a field that is only summed
        ];
        for r in &bad {
            assert!(matches!(record(&mut b, r), Err(Refusal::Bad(_))), "{r:?}");
        }
        for status in [Val::Null, Val::Real(f64::NAN)] {
            let r = with(3, status);
            assert!(matches!(record(&mut b, &r), Err(Refusal::Missing(_))));
        }
        let short = &with(0, Val::Real(2.0))[..6];
        assert!(matches!(record(&mut b, short), Err(Refusal::Bad(_))));
        let batch = b.finish();
        assert_eq!(
            String::from_utf8(batch.records).unwrap_or_default(),
            r#"[[1.0,"r1","k",200,1,0.0,null]]"#
        );
        assert_eq!(batch.n, 1);
        assert_eq!(batch.rollups.len(), 1);
    }

    #[test]
    fn a_spec_past_the_record_is_refused() {
        let mut s = spec();
        s.real_sums = vec![9];
        assert!(BatchBuilder::new(7, 1, &[], s).is_err());
        assert!(BatchBuilder::new(7, 8, &[], spec()).is_err());
        assert!(BatchBuilder::new(7, 1, &[7], spec()).is_err());
    }
}
