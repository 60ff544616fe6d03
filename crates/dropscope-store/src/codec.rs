//! Compact binary encoding of [`Record`]s (WAL and meta-log payloads).
//!
//! Binary rather than JSON so that numbers round-trip exactly (serde_json's
//! default float parser is not guaranteed bit-exact) and encoding is cheap.
//! All integers little-endian.
//!
//! ```text
//! record  := 0x01 uuid:u128 ts:i64 str(event) str(distinct_id) map      -- Event
//!          | 0x02 str(id) n:u32 str{n} map                              -- Person
//!          | 0x03 index:u8 str(group_type) str(key) map                 -- Group
//!          | 0x04 id:u64 str(name) (0x00 | 0x01 value) static:u8 n:u32 str{n} -- Cohort
//! str     := len:u32 utf8{len}
//! map     := n:u32 (str value){n}                 -- insertion order kept
//! value   := 0x00 null | 0x01 false | 0x02 true
//!          | 0x03 u64 | 0x04 i64 | 0x05 f64-bits:u64
//!          | 0x06 str | 0x07 n:u32 value{n} | 0x08 map
//! ```

use dropscope_core::event::{CohortRecord, Event, GroupRecord, PersonRecord};
use serde_json::{Map, Number, Value};

use crate::state::Record;

/// Appends the encoding of `rec` to `out`.
pub fn encode_record(rec: &Record, out: &mut Vec<u8>) {
    match rec {
        Record::Event(e) => {
            out.push(1);
            out.extend_from_slice(&e.uuid.to_le_bytes());
            out.extend_from_slice(&e.timestamp.to_le_bytes());
            put_str(out, &e.event);
            put_str(out, &e.distinct_id);
            put_map(out, &e.properties);
        }
        Record::Person(p) => {
            out.push(2);
            put_str(out, &p.id);
            out.extend_from_slice(&(p.distinct_ids.len() as u32).to_le_bytes());
            for d in &p.distinct_ids {
                put_str(out, d);
            }
            put_map(out, &p.properties);
        }
        Record::Group(g) => {
            out.push(3);
            out.push(g.group_type_index);
            put_str(out, &g.group_type);
            put_str(out, &g.key);
            put_map(out, &g.properties);
        }
        Record::Cohort(c) => {
            out.push(4);
            out.extend_from_slice(&c.id.to_le_bytes());
            put_str(out, &c.name);
            match &c.definition {
                None => out.push(0),
                Some(v) => {
                    out.push(1);
                    put_value(out, v);
                }
            }
            out.push(c.is_static as u8);
            out.extend_from_slice(&(c.members.len() as u32).to_le_bytes());
            for m in &c.members {
                put_str(out, m);
            }
        }
    }
}

/// Decodes one record that must span all of `buf`.
pub fn decode_record(buf: &[u8]) -> Result<Record, String> {
    let mut r = Reader { buf, pos: 0 };
    let rec = match r.u8()? {
        1 => {
            let uuid = u128::from_le_bytes(r.array()?);
            let timestamp = i64::from_le_bytes(r.array()?);
            let event = r.string()?;
            let distinct_id = r.string()?;
            let properties = r.map(0)?;
            Record::Event(Event {
                uuid,
                event,
                distinct_id,
                timestamp,
                properties,
            })
        }
        2 => {
            let id = r.string()?;
            let n = r.u32()?;
            let mut distinct_ids = Vec::new();
            for _ in 0..n {
                distinct_ids.push(r.string()?);
            }
            let properties = r.map(0)?;
            Record::Person(PersonRecord {
                id,
                distinct_ids,
                properties,
            })
        }
        3 => {
            let group_type_index = r.u8()?;
            let group_type = r.string()?;
            let key = r.string()?;
            let properties = r.map(0)?;
            Record::Group(GroupRecord {
                group_type_index,
                group_type,
                key,
                properties,
            })
        }
        4 => {
            let id = u64::from_le_bytes(r.array()?);
            let name = r.string()?;
            let definition = match r.u8()? {
                0 => None,
                1 => Some(r.value(0)?),
                t => return Err(format!("bad option tag {t}")),
            };
            let is_static = r.u8()? != 0;
            let n = r.u32()?;
            let mut members = Vec::new();
            for _ in 0..n {
                members.push(r.string()?);
            }
            Record::Cohort(CohortRecord {
                id,
                name,
                definition,
                is_static,
                members,
            })
        }
        t => return Err(format!("unknown record tag {t}")),
    };
    if r.pos != buf.len() {
        return Err(format!("{} trailing bytes", buf.len() - r.pos));
    }
    Ok(rec)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_map(out: &mut Vec<u8>, m: &Map<String, Value>) {
    out.extend_from_slice(&(m.len() as u32).to_le_bytes());
    for (k, v) in m {
        put_str(out, k);
        put_value(out, v);
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(0),
        Value::Bool(false) => out.push(1),
        Value::Bool(true) => out.push(2),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.push(3);
                out.extend_from_slice(&u.to_le_bytes());
            } else if let Some(i) = n.as_i64() {
                out.push(4);
                out.extend_from_slice(&i.to_le_bytes());
            } else {
                out.push(5);
                let f = n.as_f64().unwrap_or(0.0);
                out.extend_from_slice(&f.to_bits().to_le_bytes());
            }
        }
        Value::String(s) => {
            out.push(6);
            put_str(out, s);
        }
        Value::Array(a) => {
            out.push(7);
            out.extend_from_slice(&(a.len() as u32).to_le_bytes());
            for x in a {
                put_value(out, x);
            }
        }
        Value::Object(m) => {
            out.push(8);
            put_map(out, m);
        }
    }
}

const MAX_DEPTH: usize = 256;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.buf.len() - self.pos < n {
            return Err("record ends early".into());
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|e| format!("bad utf-8: {e}"))
    }

    fn map(&mut self, depth: usize) -> Result<Map<String, Value>, String> {
        let n = self.u32()?;
        let mut m = Map::new();
        for _ in 0..n {
            let k = self.string()?;
            let v = self.value(depth + 1)?;
            m.insert(k, v);
        }
        Ok(m)
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err("value nested too deeply".into());
        }
        Ok(match self.u8()? {
            0 => Value::Null,
            1 => Value::Bool(false),
            2 => Value::Bool(true),
            3 => Value::Number(u64::from_le_bytes(self.array()?).into()),
            4 => Value::Number(i64::from_le_bytes(self.array()?).into()),
            5 => {
                let f = f64::from_bits(u64::from_le_bytes(self.array()?));
                Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or("non-finite float")?
            }
            6 => Value::String(self.string()?),
            7 => {
                let n = self.u32()?;
                let mut a = Vec::new();
                for _ in 0..n {
                    a.push(self.value(depth + 1)?);
                }
                Value::Array(a)
            }
            8 => Value::Object(self.map(depth)?),
            t => return Err(format!("unknown value tag {t}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_round_trip() {
        let Value::Object(props) = json!({
            "a": 1, "b": -2, "c": 0.1, "d": 1e300, "e": "x", "f": [1, null, true],
            "g": {"h": false}, "i": u64::MAX
        }) else {
            unreachable!()
        };
        let recs = vec![
            Record::Event(Event {
                uuid: u128::MAX - 7,
                event: "$pageview".into(),
                distinct_id: "u1".into(),
                timestamp: -5,
                properties: props.clone(),
            }),
            Record::Person(PersonRecord {
                id: "p".into(),
                distinct_ids: vec!["a".into(), "b".into()],
                properties: props.clone(),
            }),
            Record::Group(GroupRecord {
                group_type_index: 2,
                group_type: "company".into(),
                key: "acme".into(),
                properties: props,
            }),
            Record::Cohort(CohortRecord {
                id: 9,
                name: "c".into(),
                definition: Some(json!({"properties": []})),
                is_static: true,
                members: vec!["a".into()],
            }),
        ];
        for r in recs {
            let mut buf = Vec::new();
            encode_record(&r, &mut buf);
            assert_eq!(decode_record(&buf).unwrap(), r);
            assert!(decode_record(&buf[..buf.len() - 1]).is_err());
        }
    }
}
