//! Compiled field tests: operand values parsed and typed once, so that matching an event does
//! no parsing and no allocation.

use std::net::IpAddr;

use foldhash::HashSet;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::{
    condition::{Op, Scalar},
    error::{Located, Res},
    field::{Field, FieldType, Value},
};

#[derive(Debug)]
pub(crate) enum Matcher {
    StrEq(Box<str>),
    StrIn(HashSet<Box<str>>),
    StartsWith(Box<[Box<str>]>),
    EndsWith(Box<[Box<str>]>),
    Contains(Box<[Box<str>]>),
    Glob(GlobSet),
    IntIn(Box<[i128]>),
    Gt(i128),
    Gte(i128),
    Lt(i128),
    Lte(i128),
    BitsAny(i128),
    BitsAll(i128),
    BoolEq(bool),
    AddrIn(Box<[IpAddr]>),
    Cidr(Box<[Net]>),
    Exists(bool),
}

/// One field test of a compiled condition.
#[derive(Debug)]
pub(crate) struct Test {
    pub field: Field,
    pub matcher: Matcher,
    /// The operator and values as written, for the prefilter (see `index`).
    pub op: Op,
    pub values: Box<[Box<str>]>,
}

impl Test {
    pub fn compile(field: Field, op: Op, values: &[Scalar], line: usize) -> Res<Test> {
        let matcher = matcher(field, op, values, line)?;
        Ok(Test {
            field,
            matcher,
            op,
            values: values.iter().map(|s| s.text.as_str().into()).collect(),
        })
    }

    pub fn matches(&self, value: Value<'_>) -> bool {
        match value {
            Value::StrList(items) => items.iter().any(|s| self.matches(Value::Str(s))),
            Value::IntList(items) => items.iter().any(|i| self.matches(Value::Int((*i).into()))),
            Value::Missing => matches!(self.matcher, Matcher::Exists(false)),
            _ => self.matches_one(value),
        }
    }

    fn matches_one(&self, value: Value<'_>) -> bool {
        use Matcher as M;
        match (&self.matcher, value) {
            (M::Exists(want), _) => *want,
            (M::StrEq(s), Value::Str(v)) => **s == *v,
            (M::StrIn(set), Value::Str(v)) => set.contains(v),
            (M::StartsWith(p), Value::Str(v)) => p.iter().any(|p| v.starts_with(&**p)),
            (M::EndsWith(p), Value::Str(v)) => p.iter().any(|p| v.ends_with(&**p)),
            (M::Contains(p), Value::Str(v)) => p.iter().any(|p| v.contains(&**p)),
            (M::Glob(set), Value::Str(v)) => set.is_match(v),
            (M::IntIn(set), Value::Int(v)) => set.contains(&v),
            (M::Gt(n), Value::Int(v)) => v > *n,
            (M::Gte(n), Value::Int(v)) => v >= *n,
            (M::Lt(n), Value::Int(v)) => v < *n,
            (M::Lte(n), Value::Int(v)) => v <= *n,
            (M::BitsAny(m), Value::Int(v)) => v & m != 0,
            (M::BitsAll(m), Value::Int(v)) => v & m == *m,
            (M::BoolEq(b), Value::Bool(v)) => *b == v,
            (M::AddrIn(set), Value::Addr(a)) => set.contains(&canonical(a)),
            (M::Cidr(nets), Value::Addr(a)) => nets.iter().any(|n| n.contains(canonical(a))),
            _ => false,
        }
    }
}

fn matcher(field: Field, op: Op, values: &[Scalar], line: usize) -> Res<Matcher> {
    let ty = field.ty();
    let wrong = || {
        Located::new(
            line,
            format!(
                "operator \"{}\" does not apply to {} field \"{}\"",
                op.name(),
                ty.name(),
                field.name()
            ),
        )
    };
    let single = || -> Res<&Scalar> {
        match values {
            [one] => Ok(one),
            _ => Err(Located::new(
                line,
                format!("operator \"{}\" takes one value", op.name()),
            )),
        }
    };
    let strs = || {
        values
            .iter()
            .map(|s| s.text.as_str().into())
            .collect::<Box<[Box<str>]>>()
    };
    let ints = || values.iter().map(int).collect::<Res<Box<[i128]>>>();
    Ok(match (ty, op) {
        (_, Op::Exists) => Matcher::Exists(boolean(single()?)?),
        (FieldType::Str, Op::Equals) => Matcher::StrEq(single()?.text.as_str().into()),
        (FieldType::Str, Op::In) => {
            Matcher::StrIn(values.iter().map(|s| s.text.as_str().into()).collect())
        }
        (FieldType::Str, Op::StartsWith) => Matcher::StartsWith(strs()),
        (FieldType::Str, Op::EndsWith) => Matcher::EndsWith(strs()),
        (FieldType::Str, Op::Contains) => Matcher::Contains(strs()),
        (FieldType::Str, Op::Glob) => Matcher::Glob(globs(values)?),
        (FieldType::Int, Op::Equals) => Matcher::IntIn(Box::new([int(single()?)?])),
        (FieldType::Int, Op::In) => Matcher::IntIn(ints()?),
        (FieldType::Int, Op::Gt) => Matcher::Gt(int(single()?)?),
        (FieldType::Int, Op::Gte) => Matcher::Gte(int(single()?)?),
        (FieldType::Int, Op::Lt) => Matcher::Lt(int(single()?)?),
        (FieldType::Int, Op::Lte) => Matcher::Lte(int(single()?)?),
        (FieldType::Int, Op::BitsAny) => Matcher::BitsAny(int(single()?)?),
        (FieldType::Int, Op::BitsAll) => Matcher::BitsAll(int(single()?)?),
        (FieldType::Bool, Op::Equals) => Matcher::BoolEq(boolean(single()?)?),
        (FieldType::Addr, Op::Equals) => Matcher::AddrIn(Box::new([addr(single()?)?])),
        (FieldType::Addr, Op::In) => Matcher::AddrIn(values.iter().map(addr).collect::<Res<_>>()?),
        (FieldType::Addr, Op::Cidr) => {
            Matcher::Cidr(values.iter().map(Net::parse).collect::<Res<_>>()?)
        }
        _ => return Err(wrong()),
    })
}

/// Globs for paths: `*` and `?` stop at `/`, `**` crosses directories.
pub(crate) fn glob(pattern: &str, line: usize) -> Res<globset::Glob> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| Located::new(line, format!("invalid glob \"{pattern}\": {}", e.kind())))
}

fn globs(values: &[Scalar]) -> Res<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for v in values {
        b.add(glob(&v.text, v.line)?);
    }
    b.build().map_err(|e| {
        Located::new(
            values.first().map_or(0, |v| v.line),
            format!("invalid glob: {e}"),
        )
    })
}

/// Integers in decimal, `0x` hex, `0o` octal or `0b` binary. A leading zero (`0755`) is refused:
/// YAML reads it as decimal, which is never what a file mode means.
pub(crate) fn int(s: &Scalar) -> Res<i128> {
    let bad = || Located::new(s.line, format!("expected a number, found \"{}\"", s.text));
    let t = s.text.trim().replace('_', "");
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.as_str()),
    };
    let (radix, body) = if let Some(b) = digits.strip_prefix("0x") {
        (16, b)
    } else if let Some(b) = digits.strip_prefix("0o") {
        (8, b)
    } else if let Some(b) = digits.strip_prefix("0b") {
        (2, b)
    } else {
        if digits.len() > 1 && digits.starts_with('0') {
            return Err(Located::new(
                s.line,
                format!(
                    "ambiguous number \"{}\": write octal as 0o{}",
                    s.text,
                    &digits[1..]
                ),
            ));
        }
        (10, digits)
    };
    let v = i128::from_str_radix(body, radix).map_err(|_| bad())?;
    Ok(if neg { -v } else { v })
}

fn boolean(s: &Scalar) -> Res<bool> {
    match s.text.as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Located::new(
            s.line,
            format!("expected true or false, found \"{}\"", s.text),
        )),
    }
}

fn addr(s: &Scalar) -> Res<IpAddr> {
    s.text.parse::<IpAddr>().map(canonical).map_err(|_| {
        Located::new(
            s.line,
            format!("expected an IP address, found \"{}\"", s.text),
        )
    })
}

/// IPv4-mapped IPv6 addresses (an IPv6 socket talking to an IPv4 peer) compare as IPv4.
fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        IpAddr::V4(_) => a,
    }
}

/// An address block, `10.0.0.0/8` or `fd00::/8`; a bare address is a single host.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Net {
    V4(u32, u32),
    V6(u128, u128),
}

impl Net {
    fn parse(s: &Scalar) -> Res<Net> {
        let bad = || Located::new(s.line, format!("invalid CIDR \"{}\"", s.text));
        let (ip, len) = match s.text.split_once('/') {
            Some((ip, len)) => (ip, Some(len.parse::<u32>().map_err(|_| bad())?)),
            None => (s.text.as_str(), None),
        };
        match canonical(ip.parse::<IpAddr>().map_err(|_| bad())?) {
            IpAddr::V4(v4) => {
                let len = len.unwrap_or(32);
                if len > 32 {
                    return Err(bad());
                }
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                Ok(Net::V4(u32::from(v4) & mask, mask))
            }
            IpAddr::V6(v6) => {
                let len = len.unwrap_or(128);
                if len > 128 {
                    return Err(bad());
                }
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                Ok(Net::V6(u128::from(v6) & mask, mask))
            }
        }
    }

    fn contains(&self, a: IpAddr) -> bool {
        match (*self, a) {
            (Net::V4(net, mask), IpAddr::V4(v4)) => u32::from(v4) & mask == net,
            (Net::V6(net, mask), IpAddr::V6(v6)) => u128::from(v6) & mask == net,
            _ => false,
        }
    }
}
