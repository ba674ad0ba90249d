//! A minimal, bounded Python pickle reader: enough of protocols 2 to 5 to read what
//! `torch.save` writes (a state dict of `torch._utils._rebuild_tensor_v2` calls whose storages
//! are persistent ids).
//!
//! Nothing is executed: globals are recorded by name, `REDUCE`/`NEWOBJ` become [`Value::Call`]
//! nodes (except `collections.OrderedDict()`, which becomes an empty dict), and `BUILD` keeps the
//! object and drops its state. Objects live in an arena and refer to each other by [`Id`], so
//! memo references cost nothing, cycles are harmless, and memory stays linear in the input.
//! Every length is checked against what is left of the input: a truncated or hostile pickle is
//! a [`PickleError`], never a panic or an allocation larger than the input.

use std::collections::HashMap;

/// Index of an object in [`Pickle::objects`].
pub type Id = usize;

/// One unpickled object.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` or `False`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A float.
    Float(f64),
    /// A text string (byte strings of protocol 0/1 are decoded lossily).
    Str(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Id>),
    /// A list.
    List(Vec<Id>),
    /// A dict (or `OrderedDict`), in insertion order.
    Dict(Vec<(Id, Id)>),
    /// A global reference (`module.name`), not resolved.
    Global {
        /// Module path.
        module: String,
        /// Attribute name.
        name: String,
    },
    /// `func(*args)` (`REDUCE`) or `cls.__new__(cls, *args)` (`NEWOBJ`), not executed.
    Call {
        /// The callable.
        func: Id,
        /// The argument tuple.
        args: Id,
    },
    /// A persistent id (`BINPERSID`), left for the caller to resolve.
    PersistentId(Id),
}

/// Why a pickle could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickleError {
    /// The input ended inside an opcode or before `STOP`.
    #[error("pickle truncated at byte {0}")]
    Truncated(usize),
    /// An opcode this reader does not implement.
    #[error("unsupported pickle opcode 0x{opcode:02x} at byte {at}")]
    Unsupported {
        /// The opcode byte.
        opcode: u8,
        /// Its offset.
        at: usize,
    },
    /// A well-formed opcode used in a way that makes no sense (empty stack, bad memo key, ...).
    #[error("malformed pickle at byte {at}: {reason}")]
    Malformed {
        /// Offset of the opcode.
        at: usize,
        /// What is wrong.
        reason: String,
    },
}

/// An unpickled object graph.
#[derive(Debug, Clone)]
pub struct Pickle {
    /// Every object created, addressed by [`Id`].
    pub objects: Vec<Value>,
    /// The object `STOP` returned.
    pub root: Id,
}

impl Pickle {
    /// The object with id `id` ([`Value::None`] for an id that does not exist).
    pub fn get(&self, id: Id) -> &Value {
        self.objects.get(id).unwrap_or(&Value::None)
    }

    /// The string `id` holds, if it is one.
    pub fn str(&self, id: Id) -> Option<&str> {
        match self.get(id) {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer `id` holds, if it is one.
    pub fn int(&self, id: Id) -> Option<i64> {
        match self.get(id) {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// The items of the tuple (or list) `id`, if it is one.
    pub fn items(&self, id: Id) -> Option<&[Id]> {
        match self.get(id) {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }

    /// `(module, name)` of the global `id`, if it is one.
    pub fn global(&self, id: Id) -> Option<(&str, &str)> {
        match self.get(id) {
            Value::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(PickleError::Truncated(self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64_len(&mut self) -> Result<usize, PickleError> {
        let at = self.pos;
        usize::try_from(u64::from_le_bytes(self.array()?)).map_err(|_| PickleError::Truncated(at))
    }

    fn line(&mut self) -> Result<&'a str, PickleError> {
        let at = self.pos;
        let rest = &self.data[self.pos.min(self.data.len())..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated(at))?;
        let s = self.take(n + 1)?;
        std::str::from_utf8(&s[..n]).map_err(|_| PickleError::Malformed {
            at,
            reason: "a GLOBAL name is not UTF-8".into(),
        })
    }
}

struct Machine {
    objects: Vec<Value>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u64, Id>,
    at: usize,
}

impl Machine {
    fn bad(&self, reason: impl Into<String>) -> PickleError {
        PickleError::Malformed {
            at: self.at,
            reason: reason.into(),
        }
    }

    fn push(&mut self, v: Value) {
        self.objects.push(v);
        self.stack.push(self.objects.len() - 1);
    }

    fn pop(&mut self) -> Result<Id, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.bad("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.bad("stack underflow"))
    }

    fn top(&self) -> Result<Id, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.bad("empty stack"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.bad("empty stack"))
    }

    /// Pops everything above the last mark, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<Id>, PickleError> {
        let mark = self.marks.pop().ok_or_else(|| self.bad("no MARK"))?;
        Ok(self.stack.split_off(mark.min(self.stack.len())))
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<Id>, PickleError> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.pop()?);
        }
        out.reverse();
        Ok(out)
    }

    fn memo_put(&mut self, key: u64) -> Result<(), PickleError> {
        let top = self.top()?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Result<(), PickleError> {
        let id = *self
            .memo
            .get(&key)
            .ok_or_else(|| self.bad(format!("memo key {key} was never stored")))?;
        self.stack.push(id);
        Ok(())
    }

    fn append(&mut self, target: Id, items: Vec<Id>) -> Result<(), PickleError> {
        match self.objects.get_mut(target) {
            Some(Value::List(v)) => {
                v.extend(items);
                Ok(())
            }
            _ => Err(self.bad("APPEND to something that is not a list")),
        }
    }

    fn set_items(&mut self, target: Id, items: Vec<Id>) -> Result<(), PickleError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.bad("SETITEMS with an odd number of items"));
        }
        match self.objects.get_mut(target) {
            Some(Value::Dict(d)) => {
                d.extend(items.chunks_exact(2).map(|kv| (kv[0], kv[1])));
                Ok(())
            }
            _ => Err(self.bad("SETITEM on something that is not a dict")),
        }
    }

    fn call(&mut self, func: Id, args: Id) {
        let is_ordered_dict = matches!(
            self.objects.get(func),
            Some(Value::Global { module, name }) if module == "collections" && name == "OrderedDict"
        );
        let no_args = matches!(self.objects.get(args), Some(Value::Tuple(a)) if a.is_empty());
        if is_ordered_dict && no_args {
            self.push(Value::Dict(Vec::new()));
        } else {
            self.push(Value::Call { func, args });
        }
    }
}

/// Reads one pickle from `data` (which must end at or after its `STOP`).
pub fn parse(data: &[u8]) -> Result<Pickle, PickleError> {
    let mut r = Reader { data, pos: 0 };
    let mut m = Machine {
        objects: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        at: 0,
    };
    loop {
        m.at = r.pos;
        let op = r.u8()?;
        match op {
            0x80 => {
                let proto = r.u8()?;
                if proto > 5 {
                    return Err(m.bad(format!("protocol {proto}")));
                }
            }
            0x95 => {
                r.u64_len()?; // FRAME: a hint only
            }
            b'.' => {
                let root = m.pop()?;
                return Ok(Pickle {
                    objects: m.objects,
                    root,
                });
            }
            b'(' => m.marks.push(m.stack.len()),
            b'0' => {
                m.pop()?;
            }
            b'1' => {
                m.pop_mark()?;
            }
            b'2' => {
                let top = m.top()?;
                m.stack.push(top);
            }
            b'N' => m.push(Value::None),
            0x88 => m.push(Value::Bool(true)),
            0x89 => m.push(Value::Bool(false)),
            b'K' => {
                let v = r.u8()?;
                m.push(Value::Int(i64::from(v)));
            }
            b'M' => {
                let v = u16::from_le_bytes(r.array()?);
                m.push(Value::Int(i64::from(v)));
            }
            b'J' => {
                let v = i32::from_le_bytes(r.array()?);
                m.push(Value::Int(i64::from(v)));
            }
            0x8a => {
                let n = usize::from(r.u8()?);
                if n > 8 {
                    return Err(m.bad(format!("LONG1 of {n} bytes does not fit in 64 bits")));
                }
                let bytes = r.take(n)?;
                let mut buf = [0u8; 8];
                buf[..n].copy_from_slice(bytes);
                if n > 0 && n < 8 && bytes[n - 1] & 0x80 != 0 {
                    buf[n..].fill(0xff);
                }
                m.push(Value::Int(i64::from_le_bytes(buf)));
            }
            b'G' => {
                let v = f64::from_be_bytes(r.array()?);
                m.push(Value::Float(v));
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => r.u32()? as usize,
                    0x8c => usize::from(r.u8()?),
                    _ => r.u64_len()?,
                };
                let bytes = r.take(n)?;
                let s = std::str::from_utf8(bytes)
                    .map_err(|_| m.bad("a unicode string is not UTF-8"))?;
                m.push(Value::Str(s.to_string()));
            }
            b'T' | b'U' => {
                let n = if op == b'T' {
                    r.u32()? as usize
                } else {
                    usize::from(r.u8()?)
                };
                let bytes = r.take(n)?;
                m.push(Value::Str(String::from_utf8_lossy(bytes).into_owned()));
            }
            b'B' | b'C' | 0x8e => {
                let n = match op {
                    b'B' => r.u32()? as usize,
                    b'C' => usize::from(r.u8()?),
                    _ => r.u64_len()?,
                };
                let bytes = r.take(n)?;
                m.push(Value::Bytes(bytes.to_vec()));
            }
            b')' => m.push(Value::Tuple(Vec::new())),
            b']' => m.push(Value::List(Vec::new())),
            b'}' => m.push(Value::Dict(Vec::new())),
            b't' => {
                let items = m.pop_mark()?;
                m.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let items = m.pop_n(usize::from(op - 0x84))?;
                m.push(Value::Tuple(items));
            }
            b'l' => {
                let items = m.pop_mark()?;
                m.push(Value::List(items));
            }
            b'd' => {
                let items = m.pop_mark()?;
                m.push(Value::Dict(Vec::new()));
                let d = m.top()?;
                m.set_items(d, items)?;
            }
            b'a' => {
                let item = m.pop()?;
                let list = m.top()?;
                m.append(list, vec![item])?;
            }
            b'e' => {
                let items = m.pop_mark()?;
                let list = m.top()?;
                m.append(list, items)?;
            }
            b's' => {
                let kv = m.pop_n(2)?;
                let dict = m.top()?;
                m.set_items(dict, kv)?;
            }
            b'u' => {
                let items = m.pop_mark()?;
                let dict = m.top()?;
                m.set_items(dict, items)?;
            }
            b'c' => {
                let module = r.line()?.to_string();
                let name = r.line()?.to_string();
                m.push(Value::Global { module, name });
            }
            0x93 => {
                let mn = m.pop_n(2)?;
                let (module, name) = match (m.objects.get(mn[0]), m.objects.get(mn[1])) {
                    (Some(Value::Str(a)), Some(Value::Str(b))) => (a.clone(), b.clone()),
                    _ => return Err(m.bad("STACK_GLOBAL needs two strings")),
                };
                m.push(Value::Global { module, name });
            }
            b'q' => {
                let k = r.u8()?;
                m.memo_put(u64::from(k))?;
            }
            b'r' => {
                let k = r.u32()?;
                m.memo_put(u64::from(k))?;
            }
            0x94 => {
                let k = m.memo.len() as u64;
                m.memo_put(k)?;
            }
            b'h' => {
                let k = r.u8()?;
                m.memo_get(u64::from(k))?;
            }
            b'j' => {
                let k = r.u32()?;
                m.memo_get(u64::from(k))?;
            }
            b'Q' => {
                let pid = m.pop()?;
                m.push(Value::PersistentId(pid));
            }
            b'R' | 0x81 => {
                let fa = m.pop_n(2)?;
                m.call(fa[0], fa[1]);
            }
            b'b' => {
                m.pop()?; // BUILD: the state is dropped, the object stays
                m.top()?;
            }
            _ => {
                return Err(PickleError::Unsupported {
                    opcode: op,
                    at: m.at,
                });
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `{'a.weight': _rebuild_tensor_v2(pid('storage', FloatStorage, '0', 'cpu', 6), 0, (2, 3),
    /// (3, 1), False, OrderedDict())}`, as protocol 2 writes it (memoised globals, as torch does).
    pub(crate) fn torch_like_pickle(
        key: &str,
        storage: &str,
        shape: &[u8],
        stride: &[u8],
    ) -> Vec<u8> {
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'('];
        let s = |p: &mut Vec<u8>, s: &str| {
            p.push(b'X');
            p.extend_from_slice(&(s.len() as u32).to_le_bytes());
            p.extend_from_slice(s.as_bytes());
        };
        s(&mut p, key);
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\nq\x01((");
        s(&mut p, "storage");
        p.extend_from_slice(b"ctorch\nFloatStorage\nq\x02");
        s(&mut p, storage);
        s(&mut p, "cpu");
        let numel: u32 = shape.iter().map(|&d| u32::from(d)).product();
        p.push(b'J');
        p.extend_from_slice(&numel.to_le_bytes());
        p.extend_from_slice(b"tQK\x00(");
        for d in shape {
            p.extend_from_slice(&[b'K', *d]);
        }
        p.extend_from_slice(b"t(");
        for d in stride {
            p.extend_from_slice(&[b'K', *d]);
        }
        p.extend_from_slice(b"t\x89ccollections\nOrderedDict\n)Rtq\x03Ru.");
        p
    }

    #[test]
    fn reads_a_torch_state_dict_entry() {
        let p = parse(&torch_like_pickle("a.weight", "0", &[2, 3], &[3, 1])).unwrap();
        let Value::Dict(items) = p.get(p.root) else {
            panic!("root is {:?}", p.get(p.root))
        };
        assert_eq!(items.len(), 1);
        let (k, v) = items[0];
        assert_eq!(p.str(k), Some("a.weight"));
        let Value::Call { func, args } = p.get(v) else {
            panic!()
        };
        assert_eq!(
            p.global(*func),
            Some(("torch._utils", "_rebuild_tensor_v2"))
        );
        let args = p.items(*args).unwrap();
        assert_eq!(args.len(), 6);
        let Value::PersistentId(pid) = p.get(args[0]) else {
            panic!()
        };
        let pid = p.items(*pid).unwrap();
        assert_eq!(p.str(pid[0]), Some("storage"));
        assert_eq!(p.global(pid[1]), Some(("torch", "FloatStorage")));
        assert_eq!(p.str(pid[2]), Some("0"));
        assert_eq!(p.int(pid[4]), Some(6));
        let shape: Vec<_> = p
            .items(args[2])
            .unwrap()
            .iter()
            .map(|&i| p.int(i))
            .collect();
        assert_eq!(shape, [Some(2), Some(3)]);
        assert_eq!(p.get(args[5]), &Value::Dict(Vec::new()));
    }

    #[test]
    fn scalars_lists_and_memo() {
        // [1, -2 (LONG1), 300 (BININT2), -5 (BININT), 1.5, None, True, b'xy', 'é'] then a memo get.
        let mut p = vec![0x80, 4, 0x95, 0, 0, 0, 0, 0, 0, 0, 0, b']', 0x94, b'('];
        p.extend_from_slice(&[b'K', 1, 0x8a, 1, 0xfe, b'M', 0x2c, 1, b'J']);
        p.extend_from_slice(&(-5i32).to_le_bytes());
        p.push(b'G');
        p.extend_from_slice(&1.5f64.to_be_bytes());
        p.extend_from_slice(&[b'N', 0x88, b'C', 2, b'x', b'y', 0x8c, 2, 0xc3, 0xa9]);
        p.extend_from_slice(b"eh\x00a.");
        let pk = parse(&p).unwrap();
        let items = pk.items(pk.root).unwrap().to_vec();
        let vals: Vec<_> = items.iter().map(|&i| pk.get(i).clone()).collect();
        assert_eq!(vals[0], Value::Int(1));
        assert_eq!(vals[1], Value::Int(-2));
        assert_eq!(vals[2], Value::Int(300));
        assert_eq!(vals[3], Value::Int(-5));
        assert_eq!(vals[4], Value::Float(1.5));
        assert_eq!(vals[5], Value::None);
        assert_eq!(vals[6], Value::Bool(true));
        assert_eq!(vals[7], Value::Bytes(b"xy".to_vec()));
        assert_eq!(vals[8], Value::Str("é".into()));
        // The list appended to itself through the memo: a cycle, harmless in the arena.
        assert_eq!(items[9], pk.root);
    }

    #[test]
    fn bad_pickles_are_errors() {
        assert!(matches!(parse(b""), Err(PickleError::Truncated(0))));
        assert!(matches!(parse(b"\x80\x02"), Err(PickleError::Truncated(2))));
        assert!(matches!(parse(b"."), Err(PickleError::Malformed { .. })));
        assert!(matches!(
            parse(b"h\x05."),
            Err(PickleError::Malformed { .. })
        ));
        assert!(matches!(
            parse(b"X\xff\xff\xff\xff"),
            Err(PickleError::Truncated(_))
        ));
        assert!(matches!(
            parse(b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff"),
            Err(PickleError::Truncated(_))
        ));
        assert!(matches!(
            parse(b"K\x01a."),
            Err(PickleError::Malformed { .. })
        ));
        assert!(matches!(
            parse(b"cos\nsystem\n"),
            Err(PickleError::Truncated(_))
        ));
        assert!(matches!(
            parse(b"i"),
            Err(PickleError::Unsupported {
                opcode: b'i',
                at: 0
            })
        ));
        // A MARK shields what is below it.
        assert!(matches!(
            parse(b"K\x01(0"),
            Err(PickleError::Malformed { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&data);
        }

        #[test]
        fn mutated_torch_pickles_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut p = torch_like_pickle("w", "7", &[4, 2], &[2, 1]);
            for (at, b) in flips {
                let i = at.index(p.len());
                p[i] = b;
            }
            let n = cut.index(p.len() + 1);
            let _ = parse(&p[..n]);
        }
    }
}
