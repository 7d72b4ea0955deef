//! `--name value` flags; a flag nobody asked for is an error.

use std::cell::RefCell;
use std::str::FromStr;

pub struct Flags {
    pairs: Vec<(String, String)>,
    read: RefCell<Vec<String>>,
}

impl Flags {
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("expected a --flag, got {flag}"))?;
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            pairs.push((name.to_string(), value.clone()));
        }
        Ok(Self {
            pairs,
            read: RefCell::new(Vec::new()),
        })
    }

    fn raw(&self, name: &str) -> Option<&str> {
        self.read.borrow_mut().push(name.to_string());
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `--name`'s value, or `default`.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.raw(name) {
            Some(v) => v.parse().map_err(|_| format!("bad --{name} {v}")),
            None => Ok(default),
        }
    }

    /// `--name`'s value as text, or `default`.
    pub fn text(&self, name: &str, default: &str) -> String {
        self.raw(name).unwrap_or(default).to_string()
    }

    /// `--name a,b,c`, or `default` in the same form.
    pub fn list<T: FromStr>(&self, name: &str, default: &str) -> Result<Vec<T>, String> {
        let v = self.raw(name).unwrap_or(default).to_string();
        v.split(',')
            .map(|x| x.trim().parse().map_err(|_| format!("bad --{name} {v}")))
            .collect()
    }

    /// Fails on a flag that no `get`, `text` or `list` asked for.
    pub fn done(&self) -> Result<(), String> {
        let read = self.read.borrow();
        match self.pairs.iter().find(|(n, _)| !read.contains(n)) {
            Some((n, _)) => Err(format!("unknown flag --{n}")),
            None => Ok(()),
        }
    }

    /// The flags as given, to pass on to a child.
    pub fn passed(&self, names: &[&str]) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(n, _)| names.contains(&n.as_str()))
            .flat_map(|(n, v)| [format!("--{n}"), v.clone()])
            .collect()
    }
}
