//! Mutators for the recording fuzz campaign: byte-level ones on whole files or on bodies, and
//! structure-aware ones on a body's JSON. Each returns a short description of what it did, so
//! a failing case reads as a recipe.
use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value};

/// Marks a string that stands for raw JSON text (a number serde_json::Value cannot hold, a
/// lone surrogate): `to_text` replaces the quoted string with the text itself.
const RAW: &str = "\u{2}RAW";
/// Marks a map key that `to_text` turns into a duplicate of the key before it.
const DUP: &str = "\u{2}DUP";
/// Bytes a lengthened array may add, so that one case stays small enough to be quick.
const GROWTH_BUDGET: usize = 2 << 20;

/// Apply 1 to 4 byte-level mutations to `data`; `other` is a splice partner.
pub fn bytes(rng: &mut ChaCha8Rng, data: &mut Vec<u8>, other: &[u8]) -> Vec<String> {
    let ops = rng.random_range(1..=4);
    (0..ops).map(|_| byte_op(rng, data, other)).collect()
}

fn byte_op(rng: &mut ChaCha8Rng, data: &mut Vec<u8>, other: &[u8]) -> String {
    const INTERESTING: &[u8] = b"\0\xff\n\r\"{}[]:,-09e.\\ ";
    let len = data.len();
    let at = |rng: &mut ChaCha8Rng| rng.random_range(0..=len);
    match rng.random_range(0..8) {
        0 if len > 0 => {
            let i = rng.random_range(0..len);
            let bit = rng.random_range(0..8);
            data[i] ^= 1 << bit;
            format!("flip bit {bit} of byte {i}")
        }
        1 if len > 0 => {
            let i = rng.random_range(0..len);
            data[i] = *INTERESTING.choose(rng).unwrap();
            format!("set byte {i} to {:#04x}", data[i])
        }
        2 => {
            let i = at(rng);
            let n = rng.random_range(1..=16);
            let ins: Vec<u8> = (0..n).map(|_| *INTERESTING.choose(rng).unwrap()).collect();
            data.splice(i..i, ins);
            format!("insert {n} bytes at {i}")
        }
        3 if len > 0 => {
            let i = rng.random_range(0..len);
            let n = rng.random_range(1..=64).min(len - i);
            data.drain(i..i + n);
            format!("delete {n} bytes at {i}")
        }
        4 => {
            let i = at(rng);
            data.truncate(i);
            format!("truncate to {i}")
        }
        5 => {
            let (i, j) = (at(rng), rng.random_range(0..=other.len()));
            data.truncate(i);
            data.extend_from_slice(&other[j..]);
            format!("splice: first {i} bytes, then the other file from {j}")
        }
        6 if len > 0 => {
            let i = rng.random_range(0..len);
            let n = rng.random_range(1..=256).min(len - i);
            let chunk = data[i..i + n].to_vec();
            let to = at(rng);
            data.splice(to..to, chunk);
            format!("copy {n} bytes from {i} to {to}")
        }
        _ => {
            data.extend_from_slice(other);
            "append the other file".into()
        }
    }
}

/// Where a node of the JSON tree is.
#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

fn paths(v: &Value, here: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    out.push(here.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                here.push(Seg::Key(k.clone()));
                paths(child, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                here.push(Seg::Index(i));
                paths(child, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn node<'a>(v: &'a mut Value, path: &[Seg]) -> &'a mut Value {
    path.iter().fold(v, |v, seg| match seg {
        Seg::Key(k) => &mut v[k.as_str()],
        Seg::Index(i) => &mut v[*i],
    })
}

fn describe(path: &[Seg]) -> String {
    let mut s = String::from("$");
    for seg in path {
        match seg {
            Seg::Key(k) => s.push_str(&format!(".{k}")),
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Fields whose values the views compute with: mutated more often than frames' offsets.
const TARGETS: &[&str] = &[
    "count",
    "total_ns",
    "max_ns",
    "buckets",
    "duration_ns",
    "cpus",
    "cpu",
    "allocs",
    "frees",
    "purges",
    "allocs_per_cpu",
    "size_pages",
    "stacks",
    "frames",
    "user_frames",
    "function",
    "comm",
    "hostname",
    "name",
    "kernel_release",
    "notes",
    "captured",
    "skipped",
    "lock_addr",
    "flags",
    "design",
    "other_lock_period",
    "samples_per_cpu_s",
    "per_cpu",
    "lock_timing",
    "locks",
    "tasks",
    "functions",
    "attribution",
    "vmap_function",
    "call_site",
    "class",
    "lazy_pages_max",
    "lazy_pages_peak",
    "stack_sampling",
    "losses",
];

/// Apply 1 to 6 structure-aware mutations to a recording body.
pub fn json(rng: &mut ChaCha8Rng, body: &mut Value) -> Vec<String> {
    let ops = [1, 1, 1, 2, 2, 3, 4, 6].choose(rng).copied().unwrap();
    (0..ops).map(|_| json_op(rng, body)).collect()
}

fn json_op(rng: &mut ChaCha8Rng, body: &mut Value) -> String {
    let mut all = Vec::new();
    paths(body, &mut Vec::new(), &mut all);
    let targeted: Vec<&Vec<Seg>> = all
        .iter()
        .filter(|p| matches!(p.last(), Some(Seg::Key(k)) if TARGETS.contains(&k.as_str())))
        .collect();
    let path = if !targeted.is_empty() && rng.random_bool(0.6) {
        (*targeted.choose(rng).unwrap()).clone()
    } else {
        all.choose(rng).unwrap().clone()
    };
    let where_ = describe(&path);
    let what = mutate_node(rng, node(body, &path));
    format!("{where_}: {what}")
}

fn mutate_node(rng: &mut ChaCha8Rng, v: &mut Value) -> String {
    if rng.random_bool(0.1) {
        *v = any_value(rng);
        return format!("replace with {}", short(v));
    }
    match v {
        Value::Number(_) => {
            *v = number(rng);
            format!("number {}", short(v))
        }
        Value::String(_) => {
            *v = Value::String(string(rng));
            format!("string {}", short(v))
        }
        Value::Bool(b) => {
            *b = !*b;
            "flip".into()
        }
        Value::Null => {
            *v = any_value(rng);
            format!("null to {}", short(v))
        }
        Value::Array(a) => array(rng, a),
        Value::Object(m) => object(rng, m),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!(
            "{}... ({} bytes)",
            s.chars().take(50).collect::<String>(),
            s.len()
        )
    } else {
        s
    }
}

fn number(rng: &mut ChaCha8Rng) -> Value {
    const RAW_NUMBERS: &[&str] = &[
        "1e999",
        "-1e999",
        "18446744073709551616",
        "-18446744073709551617",
        "-0",
        "1.0e19",
        "1E400",
        "NaN",
        "Infinity",
    ];
    match rng.random_range(0..10) {
        0 => [0u64, 1, 2, 63, 64, 65, 255, 256]
            .choose(rng)
            .unwrap()
            .to_owned()
            .into(),
        1 => [
            u32::MAX as u64,
            u32::MAX as u64 + 1,
            i64::MAX as u64,
            u64::MAX,
            u64::MAX - 1,
            1 << 53,
            (1 << 53) + 1,
        ]
        .choose(rng)
        .unwrap()
        .to_owned()
        .into(),
        2 => [-1i64, i64::MIN, -4096]
            .choose(rng)
            .unwrap()
            .to_owned()
            .into(),
        3 => [1e308, -1e308, 0.5, 1e-300, 5e-324, -0.0, 1.5e19]
            .choose(rng)
            .map(|f| serde_json::Number::from_f64(*f).unwrap())
            .unwrap()
            .into(),
        4 => Value::String(format!("{RAW}{}", RAW_NUMBERS.choose(rng).unwrap())),
        5 => ["NaN", "inf", "-1", "0x10", "1e3"]
            .choose(rng)
            .unwrap()
            .to_owned()
            .into(),
        // Near a power of two: where sums and shifts overflow.
        _ => {
            let shift = rng.random_range(0..64);
            let base = 1u64 << shift;
            base.wrapping_add(rng.random_range(0..3))
                .wrapping_sub(1)
                .into()
        }
    }
}

fn string(rng: &mut ChaCha8Rng) -> String {
    const PIECES: &[&str] = &[
        "",
        "\u{0}",
        "\u{7}\u{1b}[31mred\u{1b}[0m",
        "\r\n",
        "\t",
        ";",
        "a;b;c",
        "\"quoted\"",
        "=HYPERLINK(\"x\")",
        "<script>alert(1)</script>",
        "]]>",
        "--",
        "&amp;",
        "\u{202e}rtl",
        "vmap_node[3].busy.lock",
        "0xffffffff81000000",
        "alloc_vmap_area",
        "[spinlock x]",
        " ",
        "é☃🦀",
        "%s%n",
    ];
    let mut s = String::new();
    for _ in 0..rng.random_range(1..=4) {
        s.push_str(PIECES.choose(rng).unwrap());
    }
    if rng.random_bool(0.1) {
        let n = *[1_000, 10_000, 100_000].choose(rng).unwrap();
        s = s.repeat(n / s.len().max(1) + 1);
    }
    if rng.random_bool(0.05) {
        // A lone surrogate: valid JSON syntax, not a valid string.
        return format!("{RAW}\"\\ud800{s}\"");
    }
    s
}

fn any_value(rng: &mut ChaCha8Rng) -> Value {
    match rng.random_range(0..6) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => number(rng),
        3 => Value::String(string(rng)),
        4 => Value::Array(vec![number(rng); rng.random_range(0..4)]),
        _ => Value::Object(Map::new()),
    }
}

fn array(rng: &mut ChaCha8Rng, a: &mut Vec<Value>) -> String {
    match rng.random_range(0..6) {
        0 => {
            a.clear();
            "empty".into()
        }
        1 if !a.is_empty() => {
            let i = rng.random_range(0..a.len());
            a.remove(i);
            format!("remove [{i}]")
        }
        2 if !a.is_empty() => {
            let i = rng.random_range(0..a.len());
            a.insert(i, a[i].clone());
            format!("duplicate [{i}]")
        }
        3 => {
            // Histogram buckets and per-CPU lists: more entries than there are bits or CPUs.
            let n = *[63, 64, 65, 200].choose(rng).unwrap();
            let fill = if rng.random_bool(0.5) {
                Value::from(u64::MAX)
            } else {
                Value::from(1)
            };
            a.resize(n, fill.clone());
            format!("resize to {n} with {fill}")
        }
        4 if !a.is_empty() => {
            let each = a.iter().map(|v| v.to_string().len() + 1).sum::<usize>() / a.len();
            let target = *[2 * a.len(), 1_000, 10_000].choose(rng).unwrap();
            let target = target.min(a.len() + GROWTH_BUDGET / each.max(1));
            let copies: Vec<Value> = a
                .iter()
                .cycle()
                .take(target - a.len().min(target))
                .cloned()
                .collect();
            a.extend(copies);
            format!("lengthen to {}", a.len())
        }
        _ if !a.is_empty() => {
            let i = rng.random_range(0..a.len());
            let what = mutate_node(rng, &mut a[i]);
            format!("[{i}] {what}")
        }
        _ => {
            a.push(any_value(rng));
            "push".into()
        }
    }
}

fn object(rng: &mut ChaCha8Rng, m: &mut Map<String, Value>) -> String {
    let keys: Vec<String> = m.keys().cloned().collect();
    match rng.random_range(0..5) {
        0 if !keys.is_empty() => {
            let k = keys.choose(rng).unwrap();
            m.remove(k);
            format!("drop field {k}")
        }
        1 if !keys.is_empty() => {
            // serde_json::Map keeps one value per key: a marked key becomes the duplicate.
            let k = keys.choose(rng).unwrap().clone();
            let mut dup = m[&k].clone();
            if rng.random_bool(0.5) {
                mutate_node(rng, &mut dup);
            }
            // Sorted or in insertion order, the marked key follows the original.
            m.insert(format!("{k}{DUP}"), dup);
            format!("duplicate field {k}")
        }
        2 => {
            m.insert("unknown_field".into(), any_value(rng));
            "add unknown_field".into()
        }
        _ if !keys.is_empty() => {
            let k = keys.choose(rng).unwrap();
            let what = mutate_node(rng, m.get_mut(k).unwrap());
            format!(".{k} {what}")
        }
        _ => "nothing (empty object)".into(),
    }
}

/// The JSON text of `v`, with the raw-text and duplicate-key markers applied.
pub fn to_text(v: &Value) -> Vec<u8> {
    let text = serde_json::to_string(v).unwrap();
    let text = text.replace(&format!("{}\":", escaped(DUP)), "\":");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    let marker = format!("\"{}", escaped(RAW));
    while let Some(i) = rest.find(&marker) {
        out.push_str(&rest[..i]);
        let after = &rest[i + marker.len()..];
        let end = closing_quote(after);
        out.push_str(&unescape(&after[..end]));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out.into_bytes()
}

/// `\u0002RAW` as serde_json writes it inside a string.
fn escaped(marker: &str) -> String {
    let quoted = serde_json::to_string(marker).unwrap();
    quoted[1..quoted.len() - 1].to_string()
}

/// Index of the first unescaped `"` in `s`.
fn closing_quote(s: &str) -> usize {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return i,
            _ => {}
        }
    }
    s.len()
}

fn unescape(s: &str) -> String {
    serde_json::from_str(&format!("\"{s}\"")).unwrap()
}
