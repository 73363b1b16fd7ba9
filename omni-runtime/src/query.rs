//! Live queries: a filter on a collection's attributes, an order and a limit, whose result a
//! client holds and keeps in sync as models enter and leave it (docs/PROTOCOL.md, "Queries").
//!
//! A [`Query`] is typed by its model. Server code sees the parsed query in
//! [`CollectionPermissions::can_query`](crate::collection::CollectionPermissions::can_query);
//! the Rust [`Client`](crate::client::Client) builds one through the model's typed change enum,
//! so a misspelled attribute or a value of the wrong type does not compile:
//!
//! ```
//! # use omni_runtime::prelude::*;
//! #[derive(Model, Clone, Default)]
//! struct Line { room: String, at: u64, text: String }
//!
//! let q = Query::<Line>::new()
//!     .eq(LineChange::Room("lobby".into()))
//!     .gt(LineChange::At(1_000))
//!     .order_by(LineAttr::At, Dir::Desc)
//!     .limit(50);
//! assert!(matches!(q.equality(LineAttr::Room), Some(LineChange::Room(r)) if r == "lobby"));
//! assert_eq!(q.max_models(), Some(50));
//! ```
//!
//! An attribute the asking connection may not read is absent for it: no comparison on it
//! matches (not even `$ne`), and it sorts before every value. So a filter never tells a client
//! anything about what it may not read.

use std::cmp::Ordering;
use std::fmt;

use serde_json::{Map, Value};

use crate::model::{Attribute, Model, Oid};

/// What a query term names: one of the model's public attributes, or its OID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field<A> {
    /// The model's OID (`"oid"` on the wire): OIDs grow, so `oid` orders by creation.
    Oid,
    /// A public attribute.
    Attr(A),
}

impl<A: Attribute> Field<A> {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Field::Oid => "oid",
            Field::Attr(a) => a.name(),
        }
    }
}

/// A comparison of a filter term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `$eq`, or a plain value.
    Eq,
    /// `$ne`.
    Ne,
    /// `$lt`.
    Lt,
    /// `$lte`.
    Le,
    /// `$gt`.
    Gt,
    /// `$gte`.
    Ge,
}

impl Cmp {
    fn op(self) -> &'static str {
        match self {
            Cmp::Eq => "$eq",
            Cmp::Ne => "$ne",
            Cmp::Lt => "$lt",
            Cmp::Le => "$lte",
            Cmp::Gt => "$gt",
            Cmp::Ge => "$gte",
        }
    }
}

/// A query's filter. Values are the attributes' JSON encodings, as the model encodes them.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter<A> {
    /// Every one of these (`$and`, or the terms of one object). Empty: every model.
    All(Vec<Filter<A>>),
    /// At least one of these (`$or`).
    Any(Vec<Filter<A>>),
    /// The field compared with a value.
    Cmp(Field<A>, Cmp, Value),
    /// The field equal to one of these values (`$in`).
    In(Field<A>, Vec<Value>),
}

/// A sort direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

/// How large a query may be, so that matching it stays cheap.
const MAX_TERMS: usize = 64;
const MAX_DEPTH: usize = 8;
const MAX_IN: usize = 1_000;
const MAX_ORDER: usize = 8;

/// A query on a collection of `M`: a filter, an order (then by OID) and a limit.
pub struct Query<M: Model> {
    filter: Filter<M::Attr>,
    order: Vec<(Field<M::Attr>, Dir)>,
    limit: Option<usize>,
}

impl<M: Model> Clone for Query<M> {
    fn clone(&self) -> Self {
        Query {
            filter: self.filter.clone(),
            order: self.order.clone(),
            limit: self.limit,
        }
    }
}

impl<M: Model> fmt::Debug for Query<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Query")
            .field("model", &M::NAME)
            .field("filter", &self.filter)
            .field("order", &self.order)
            .field("limit", &self.limit)
            .finish()
    }
}

impl<M: Model> Default for Query<M> {
    fn default() -> Self {
        Self::new()
    }
}

/// The JSON value a typed change writes, as the model encodes it.
fn change_value<M: Model>(change: M::Change) -> (M::Attr, Value) {
    let attr = M::change_attr(&change);
    let mut model = M::default();
    model.apply(change);
    (attr, model.attr_value(attr))
}

/// Building a query (typed through the model's change enum), and reading one.
impl<M: Model> Query<M> {
    /// Every model, in OID order, without a limit.
    pub fn new() -> Self {
        Query {
            filter: Filter::All(Vec::new()),
            order: Vec::new(),
            limit: None,
        }
    }

    fn and(mut self, term: Filter<M::Attr>) -> Self {
        match &mut self.filter {
            Filter::All(terms) => terms.push(term),
            other => {
                let prev = std::mem::replace(other, Filter::All(Vec::new()));
                self.filter = Filter::All(vec![prev, term]);
            }
        }
        self
    }

    fn cmp(self, change: M::Change, cmp: Cmp) -> Self {
        let (attr, value) = change_value::<M>(change);
        self.and(Filter::Cmp(Field::Attr(attr), cmp, value))
    }

    /// Only models whose attribute equals this value: `.eq(LineChange::Room("lobby".into()))`.
    pub fn eq(self, value: M::Change) -> Self {
        self.cmp(value, Cmp::Eq)
    }
    /// Only models whose attribute differs from this value.
    pub fn ne(self, value: M::Change) -> Self {
        self.cmp(value, Cmp::Ne)
    }
    /// Only models whose attribute is below this value.
    pub fn lt(self, value: M::Change) -> Self {
        self.cmp(value, Cmp::Lt)
    }
    /// Only models whose attribute is at most this value.
    pub fn le(self, value: M::Change) -> Self {
        self.cmp(value, Cmp::Le)
    }
    /// Only models whose attribute is above this value.
    pub fn gt(self, value: M::Change) -> Self {
        self.cmp(value, Cmp::Gt)
    }
    /// Only models whose attribute is at least this value.
    pub fn ge(self, value: M::Change) -> Self {
        self.cmp(value, Cmp::Ge)
    }

    /// Only models whose attribute equals one of these values, all of one attribute
    /// (`$in`). An empty list matches nothing.
    ///
    /// # Panics
    /// If the values are of different attributes.
    pub fn one_of(self, values: impl IntoIterator<Item = M::Change>) -> Self {
        let mut attr = None;
        let mut list = Vec::new();
        for change in values {
            let (a, value) = change_value::<M>(change);
            assert!(
                attr.is_none_or(|x| x == a),
                "Query::one_of: every value must be of one attribute of `{}`",
                M::NAME
            );
            attr = Some(a);
            list.push(value);
        }
        match attr {
            Some(a) => self.and(Filter::In(Field::Attr(a), list)),
            None => self.and(Filter::Any(Vec::new())),
        }
    }

    /// Only models with an OID below `oid` (a cursor: the page before it in OID order).
    pub fn oid_below(self, oid: Oid<M>) -> Self {
        self.and(Filter::Cmp(Field::Oid, Cmp::Lt, Value::from(oid.raw())))
    }
    /// Only models with an OID above `oid` (a cursor: the page after it).
    pub fn oid_above(self, oid: Oid<M>) -> Self {
        self.and(Filter::Cmp(Field::Oid, Cmp::Gt, Value::from(oid.raw())))
    }

    /// Only models that match at least one of these queries' filters (`$or`); their orders and
    /// limits are ignored.
    pub fn or(self, alternatives: impl IntoIterator<Item = Query<M>>) -> Self {
        let any = alternatives.into_iter().map(|q| q.filter).collect();
        self.and(Filter::Any(any))
    }

    /// Orders by an attribute (then by the orders given before, then by OID).
    pub fn order_by(mut self, attr: M::Attr, dir: Dir) -> Self {
        self.order.push((Field::Attr(attr), dir));
        self
    }
    /// Orders by OID, that is by creation.
    pub fn order_by_oid(mut self, dir: Dir) -> Self {
        self.order.push((Field::Oid, dir));
        self
    }
    /// At most `n` models: the first `n` in the query's order.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// The filter.
    pub fn filter(&self) -> &Filter<M::Attr> {
        &self.filter
    }
    /// The order, first key first (the OID breaks ties).
    pub fn order(&self) -> &[(Field<M::Attr>, Dir)] {
        &self.order
    }
    /// The limit the client asked for, if any.
    pub fn max_models(&self) -> Option<usize> {
        self.limit
    }

    /// The typed value of a top-level equality term on `attr` (`{room: "lobby"}` gives
    /// `Some(LineChange::Room("lobby"))`), for a `can_query` hook that requires one.
    pub fn equality(&self, attr: M::Attr) -> Option<M::Change> {
        let term = |f: &Filter<M::Attr>| match f {
            Filter::Cmp(Field::Attr(a), Cmp::Eq, v) if *a == attr => M::decode_change(attr, v).ok(),
            _ => None,
        };
        match &self.filter {
            Filter::All(terms) => terms.iter().find_map(term),
            other => term(other),
        }
    }

    /// The wire form: `{"where": {..}, "order": [..], "limit": n}`.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("where".into(), filter_json(&self.filter));
        if !self.order.is_empty() {
            let order = self
                .order
                .iter()
                .map(|(f, d)| {
                    let dir = if *d == Dir::Asc { "asc" } else { "desc" };
                    Value::from(vec![Value::from(f.name()), Value::from(dir)])
                })
                .collect();
            out.insert("order".into(), Value::Array(order));
        }
        if let Some(limit) = self.limit {
            out.insert("limit".into(), Value::from(limit));
        }
        Value::Object(out)
    }

    /// Parses a client's query (`where`, `order`, `limit` of a `query` message). Every value is
    /// decoded as its attribute's type and kept in the model's own encoding; the error names
    /// the model, the attribute and what is wrong.
    pub fn from_json(spec: &Map<String, Value>) -> Result<Self, String> {
        let filter = match spec.get("where") {
            None | Some(Value::Null) => Filter::All(Vec::new()),
            Some(Value::Object(w)) => {
                let mut terms = 0;
                parse_where::<M>(w, 0, &mut terms)?
            }
            Some(_) => return Err("`where` must be an object".into()),
        };
        let mut order = Vec::new();
        match spec.get("order") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                if items.len() > MAX_ORDER {
                    return Err(format!("`order` has more than {MAX_ORDER} keys"));
                }
                for item in items {
                    order.push(parse_order::<M>(item)?);
                }
            }
            Some(item @ Value::String(_)) => order.push(parse_order::<M>(item)?),
            Some(_) => return Err("`order` must be an array".into()),
        }
        let limit = match spec.get("limit") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or("`limit` must be a non-negative integer")?,
            ),
        };
        Ok(Query {
            filter,
            order,
            limit,
        })
    }

    /// The top-level equality terms a change of a model can be matched by: (attribute index,
    /// the encoded values). `None`: the query has none, and every change is matched against it.
    pub(crate) fn index_terms(&self) -> Option<(usize, Vec<String>)> {
        let term = |f: &Filter<M::Attr>| match f {
            Filter::Cmp(Field::Attr(a), Cmp::Eq, v) => Some((a.index(), vec![v.to_string()])),
            Filter::In(Field::Attr(a), vs) => {
                Some((a.index(), vs.iter().map(Value::to_string).collect()))
            }
            _ => None,
        };
        match &self.filter {
            Filter::All(terms) => terms.iter().find_map(term),
            other => term(other),
        }
    }

    /// Whether a model matches, given its fields' values as the asking connection sees them
    /// (`None`: absent, unreadable).
    pub(crate) fn matches<'v>(
        &self,
        get: &mut impl FnMut(Field<M::Attr>) -> Option<&'v Value>,
    ) -> bool {
        eval(&self.filter, get)
    }

    /// The sort key of a model: its order fields' values as the connection sees them.
    pub(crate) fn key<'v>(
        &self,
        get: &mut impl FnMut(Field<M::Attr>) -> Option<&'v Value>,
    ) -> Box<[Option<Value>]> {
        self.order.iter().map(|(f, _)| get(*f).cloned()).collect()
    }

    /// Compares two models by their keys, then by OID (in the last key's direction).
    pub(crate) fn compare(
        &self,
        a: (&[Option<Value>], u64),
        b: (&[Option<Value>], u64),
    ) -> Ordering {
        for (i, (_, dir)) in self.order.iter().enumerate() {
            let ord = cmp_opt(a.0[i].as_ref(), b.0[i].as_ref());
            if ord != Ordering::Equal {
                return if *dir == Dir::Asc { ord } else { ord.reverse() };
            }
        }
        let ord = a.1.cmp(&b.1);
        match self.order.last() {
            Some((_, Dir::Desc)) => ord.reverse(),
            _ => ord,
        }
    }

    /// Whether the order is by OID alone (then a scan in OID order can stop at the limit).
    pub(crate) fn oid_order(&self) -> Option<Dir> {
        match self.order.as_slice() {
            [] => Some(Dir::Asc),
            [(Field::Oid, dir)] => Some(*dir),
            _ => None,
        }
    }

    /// The attributes the filter and the order read, as a bit set of indices.
    pub(crate) fn fields(&self) -> crate::model::AttrSet {
        let mut set = crate::model::AttrSet::EMPTY;
        fn walk<A: Attribute>(f: &Filter<A>, set: &mut crate::model::AttrSet) {
            match f {
                Filter::All(t) | Filter::Any(t) => t.iter().for_each(|t| walk(t, set)),
                Filter::Cmp(Field::Attr(a), _, _) | Filter::In(Field::Attr(a), _) => {
                    set.insert(a.index())
                }
                _ => {}
            }
        }
        walk(&self.filter, &mut set);
        for (f, _) in &self.order {
            if let Field::Attr(a) = f {
                set.insert(a.index());
            }
        }
        set
    }
}

fn filter_json<A: Attribute>(f: &Filter<A>) -> Value {
    let one = |k: &str, v: Value| {
        let mut m = Map::new();
        m.insert(k.to_owned(), v);
        Value::Object(m)
    };
    match f {
        Filter::All(t) => one("$and", t.iter().map(filter_json).collect()),
        Filter::Any(t) => one("$or", t.iter().map(filter_json).collect()),
        Filter::Cmp(field, cmp, v) => one(field.name(), one(cmp.op(), v.clone())),
        Filter::In(field, vs) => one(field.name(), one("$in", Value::Array(vs.clone()))),
    }
}

fn field<M: Model>(name: &str) -> Result<Field<M::Attr>, String> {
    if name == "oid" {
        return Ok(Field::Oid);
    }
    M::Attr::from_name(name)
        .map(Field::Attr)
        .ok_or_else(|| format!("model `{}` has no public attribute `{name}`", M::NAME))
}

/// A client's value for a field, decoded as the attribute's type and encoded as the model
/// encodes it (so `1` for an `f64` attribute is `1.0`, like the model's own values).
fn value<M: Model>(f: Field<M::Attr>, v: &Value) -> Result<Value, String> {
    match f {
        Field::Oid => v
            .as_u64()
            .map(Value::from)
            .ok_or_else(|| format!("`oid` of model `{}` is a non-negative integer", M::NAME)),
        Field::Attr(a) => {
            let change = M::decode_change(a, v).map_err(|e| e.to_string())?;
            Ok(change_value::<M>(change).1)
        }
    }
}

fn parse_where<M: Model>(
    w: &Map<String, Value>,
    depth: usize,
    terms: &mut usize,
) -> Result<Filter<M::Attr>, String> {
    if depth > MAX_DEPTH {
        return Err(format!("the filter is nested deeper than {MAX_DEPTH}"));
    }
    let mut all = Vec::new();
    for (key, v) in w {
        *terms += 1;
        if *terms > MAX_TERMS {
            return Err(format!("the filter has more than {MAX_TERMS} terms"));
        }
        match key.as_str() {
            "$and" | "$or" => {
                let items = v
                    .as_array()
                    .ok_or_else(|| format!("`{key}` must be an array of filters"))?;
                let mut subs = Vec::new();
                for item in items {
                    let obj = item
                        .as_object()
                        .ok_or_else(|| format!("`{key}` must be an array of filters"))?;
                    subs.push(parse_where::<M>(obj, depth + 1, terms)?);
                }
                all.push(if key == "$and" {
                    Filter::All(subs)
                } else {
                    Filter::Any(subs)
                });
            }
            op if op.starts_with('$') => {
                return Err(format!(
                    "unknown filter operator `{op}` (expected $and or $or, or an attribute name)"
                ));
            }
            name => {
                let f = field::<M>(name)?;
                let ops = match v {
                    Value::Object(o) if !o.is_empty() && o.keys().all(|k| k.starts_with('$')) => o,
                    _ => {
                        all.push(Filter::Cmp(f, Cmp::Eq, value::<M>(f, v)?));
                        continue;
                    }
                };
                for (op, arg) in ops {
                    let cmp = match op.as_str() {
                        "$eq" => Cmp::Eq,
                        "$ne" => Cmp::Ne,
                        "$lt" => Cmp::Lt,
                        "$lte" => Cmp::Le,
                        "$gt" => Cmp::Gt,
                        "$gte" => Cmp::Ge,
                        "$in" => {
                            let items = arg
                                .as_array()
                                .filter(|a| a.len() <= MAX_IN)
                                .ok_or_else(|| {
                                    format!("`$in` of `{name}` must be an array of at most {MAX_IN} values")
                                })?;
                            let vals = items
                                .iter()
                                .map(|x| value::<M>(f, x))
                                .collect::<Result<_, _>>()?;
                            all.push(Filter::In(f, vals));
                            continue;
                        }
                        other => {
                            return Err(format!(
                                "unknown comparison `{other}` on `{name}` (expected $eq, $ne, $lt, $lte, $gt, $gte or $in)"
                            ));
                        }
                    };
                    all.push(Filter::Cmp(f, cmp, value::<M>(f, arg)?));
                }
            }
        }
    }
    Ok(if all.len() == 1 {
        all.pop().unwrap_or(Filter::All(Vec::new()))
    } else {
        Filter::All(all)
    })
}

fn parse_order<M: Model>(item: &Value) -> Result<(Field<M::Attr>, Dir), String> {
    let bad = || "each `order` key is an attribute name or [name, \"asc\" | \"desc\"]".to_owned();
    match item {
        Value::String(name) => Ok((field::<M>(name)?, Dir::Asc)),
        Value::Array(pair) if pair.len() == 2 => {
            let name = pair[0].as_str().ok_or_else(bad)?;
            let dir = match pair[1].as_str() {
                Some("asc") => Dir::Asc,
                Some("desc") => Dir::Desc,
                _ => return Err(bad()),
            };
            Ok((field::<M>(name)?, dir))
        }
        _ => Err(bad()),
    }
}

fn eval<'v, A: Attribute>(
    f: &Filter<A>,
    get: &mut impl FnMut(Field<A>) -> Option<&'v Value>,
) -> bool {
    match f {
        Filter::All(t) => t.iter().all(|t| eval(t, get)),
        Filter::Any(t) => t.iter().any(|t| eval(t, get)),
        Filter::Cmp(field, cmp, lit) => {
            let Some(v) = get(*field) else {
                return false; // absent: unreadable for this connection
            };
            match cmp {
                Cmp::Eq => v == lit,
                Cmp::Ne => v != lit,
                Cmp::Lt => cmp_values(v, lit) == Ordering::Less,
                Cmp::Le => cmp_values(v, lit) != Ordering::Greater,
                Cmp::Gt => cmp_values(v, lit) == Ordering::Greater,
                Cmp::Ge => cmp_values(v, lit) != Ordering::Less,
            }
        }
        Filter::In(field, vs) => get(*field).is_some_and(|v| vs.contains(v)),
    }
}

/// Absent first, then by value.
fn cmp_opt(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => cmp_values(a, b),
    }
}

/// A total order on JSON values: null, booleans, numbers, strings (by code point), arrays
/// (element by element), objects (by their text).
pub(crate) fn cmp_values(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => {
            // By value as f64, then (where two values share one f64) floats before integers,
            // and integers exactly: one total order, however integers and floats mix.
            let key = |n: &serde_json::Number| match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => (i as f64, 1u8, i128::from(i)),
                (None, Some(u)) => (u as f64, 1, i128::from(u)),
                _ => (n.as_f64().unwrap_or(0.0), 0, 0),
            };
            let ((fx, kx, ix), (fy, ky, iy)) = (key(x), key(y));
            fx.total_cmp(&fy).then(kx.cmp(&ky)).then(ix.cmp(&iy))
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (x, y) in x.iter().zip(y) {
                let ord = cmp_values(x, y);
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(_), Value::Object(_)) => a.to_string().cmp(&b.to_string()),
        _ => rank(a).cmp(&rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_of_every_kind_order_consistently() {
        let big = 1u64 << 63;
        let values = [
            json!(big + 1),
            json!(big as f64),
            json!(big),
            json!(-1),
            json!(-1.5),
            json!(0),
            json!(2.5),
            json!(u64::MAX),
        ];
        // A total order: transitive and antisymmetric over every triple.
        for a in &values {
            for b in &values {
                assert_eq!(cmp_values(a, b), cmp_values(b, a).reverse(), "{a} {b}");
                for c in &values {
                    if cmp_values(a, b).is_le() && cmp_values(b, c).is_le() {
                        assert!(cmp_values(a, c).is_le(), "{a} <= {b} <= {c}");
                    }
                }
            }
        }
        assert!(cmp_values(&json!(big), &json!(big + 1)).is_lt());
        assert!(cmp_values(&json!(-1.5), &json!(-1)).is_lt());
        assert!(cmp_values(&json!(2.5), &json!(3)).is_lt());
        assert!(cmp_values(&json!(null), &json!(false)).is_lt());
        assert!(cmp_values(&json!("a"), &json!("b")).is_lt());
    }
}
