//! Writing ONNX models: a hand-written protobuf encoder for the subset of `onnx.proto` a plain
//! inference graph needs (model, graph, nodes, attributes, float/int64 initializers, typed inputs
//! and outputs). Fields are written in a fixed order, so the same graph always gives the same
//! bytes.

/// ONNX `TensorProto.DataType` values used here.
pub const FLOAT: i64 = 1;
/// 64-bit integer element type.
pub const INT64: i64 = 7;

/// Protobuf wire encoding of one message.
#[derive(Debug, Default, Clone)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }

    fn int(&mut self, field: u32, v: i64) {
        self.key(field, 0);
        self.varint(v as u64);
    }

    fn float(&mut self, field: u32, v: f32) {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn str(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    fn msg(&mut self, field: u32, m: &Msg) {
        self.bytes(field, &m.0);
    }
}

/// A node attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    /// `INT`.
    Int(i64),
    /// `FLOAT`.
    Float(f32),
    /// `INTS`.
    Ints(Vec<i64>),
}

/// One dimension of a graph input or output.
#[derive(Debug, Clone)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A named dynamic size.
    Named(&'static str),
}

fn value_info(name: &str, elem_type: i64, dims: &[Dim]) -> Msg {
    let mut shape = Msg::default();
    for d in dims {
        let mut dim = Msg::default();
        match d {
            Dim::Fixed(v) => dim.int(1, *v),
            Dim::Named(s) => dim.str(2, s),
        }
        shape.msg(1, &dim);
    }
    let mut tensor = Msg::default();
    tensor.int(1, elem_type);
    tensor.msg(2, &shape);
    let mut ty = Msg::default();
    ty.msg(1, &tensor);
    let mut vi = Msg::default();
    vi.str(1, name);
    vi.msg(2, &ty);
    vi
}

/// An ONNX graph under construction (default domain only).
#[derive(Debug, Default)]
pub struct Graph {
    nodes: Vec<Msg>,
    initializers: Vec<Msg>,
    inputs: Vec<Msg>,
    outputs: Vec<Msg>,
    names: usize,
}

impl Graph {
    /// A fresh value name starting with `hint`.
    fn fresh(&mut self, hint: &str) -> String {
        self.names += 1;
        format!("{hint}_{}", self.names)
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, elem_type: i64, dims: &[Dim]) -> String {
        self.inputs.push(value_info(name, elem_type, dims));
        name.to_string()
    }

    /// Declares `value` as a graph output.
    pub fn output(&mut self, value: &str, elem_type: i64, dims: &[Dim]) {
        self.outputs.push(value_info(value, elem_type, dims));
    }

    fn initializer(&mut self, hint: &str, dims: &[usize], elem_type: i64, raw: Vec<u8>) -> String {
        let name = self.fresh(hint);
        let mut t = Msg::default();
        for &d in dims {
            t.int(1, d as i64);
        }
        t.int(2, elem_type);
        t.str(8, &name);
        t.bytes(9, &raw);
        self.initializers.push(t);
        name
    }

    /// A float constant of shape `dims`.
    pub fn floats(&mut self, hint: &str, dims: &[usize], data: &[f32]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(hint, dims, FLOAT, raw)
    }

    /// A 1-D int64 constant.
    pub fn ints(&mut self, hint: &str, data: &[i64]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(hint, &[data.len()], INT64, raw)
    }

    /// Adds an `op` node reading `inputs` and returns the name of its (single) output.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node_to(op, inputs, attrs, out)
    }

    /// Adds an `op` node whose output is named `out` (a graph output's name), and returns it.
    pub fn node_to(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: &[(&str, Attr)],
        out: String,
    ) -> String {
        let mut n = Msg::default();
        for i in inputs {
            n.str(1, i);
        }
        n.str(2, &out);
        n.str(3, &out);
        n.str(4, op);
        for (name, value) in attrs {
            let mut a = Msg::default();
            a.str(1, name);
            match value {
                Attr::Float(f) => {
                    a.float(2, *f);
                    a.int(20, 1);
                }
                Attr::Int(i) => {
                    a.int(3, *i);
                    a.int(20, 2);
                }
                Attr::Ints(v) => {
                    for i in v {
                        a.int(8, *i);
                    }
                    a.int(20, 7);
                }
            }
            n.msg(5, &a);
        }
        self.nodes.push(n);
        out
    }

    /// Serialises the model: IR version 8, the default opset at `opset`, with metadata
    /// `(key, value)` pairs.
    pub fn to_model_bytes(&self, name: &str, opset: i64, metadata: &[(&str, &str)]) -> Vec<u8> {
        let mut g = Msg::default();
        for n in &self.nodes {
            g.msg(1, n);
        }
        g.str(2, name);
        for t in &self.initializers {
            g.msg(5, t);
        }
        for i in &self.inputs {
            g.msg(11, i);
        }
        for o in &self.outputs {
            g.msg(12, o);
        }
        let mut m = Msg::default();
        m.int(1, 8);
        m.str(2, "nina-model-setup");
        // A fixed producer version: the bytes must not change with the crate's version.
        m.str(3, "1");
        m.msg(7, &g);
        let mut op = Msg::default();
        op.str(1, "");
        op.int(2, opset);
        m.msg(8, &op);
        for (k, v) in metadata {
            let mut e = Msg::default();
            e.str(1, k);
            e.str(2, v);
            m.msg(14, &e);
        }
        m.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_negative_ints_encode_as_protobuf_does() {
        let mut m = Msg::default();
        m.int(1, 300);
        assert_eq!(m.0, [0x08, 0xac, 0x02]);
        let mut m = Msg::default();
        m.int(3, -1);
        assert_eq!(m.0.len(), 1 + 10);
        assert_eq!(m.0[10], 0x01);
        let mut m = Msg::default();
        m.str(2, "ab");
        assert_eq!(m.0, [0x12, 2, b'a', b'b']);
    }

    #[test]
    fn same_graph_same_bytes() {
        let build = || {
            let mut g = Graph::default();
            let x = g.input("x", FLOAT, &[Dim::Named("n"), Dim::Fixed(2)]);
            let w = g.floats("w", &[2], &[1.0, 2.0]);
            let y = g.node("Mul", &[&x, &w], &[("axis", Attr::Ints(vec![-1]))]);
            g.output(&y, FLOAT, &[Dim::Named("n"), Dim::Fixed(2)]);
            g.to_model_bytes("t", 17, &[("k", "v")])
        };
        assert_eq!(build(), build());
    }
}
