//! The canonical text of a parsed record: what the evaluator prints in traces and what a
//! parsed record turns back into.

use std::fmt;

use super::record::{Directive, MacroPart, MacroString, Mechanism, Record, Term};

impl fmt::Display for MacroString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                MacroPart::Literal(text) => f.write_str(text)?,
                MacroPart::Percent => f.write_str("%%")?,
                MacroPart::Space => f.write_str("%_")?,
                MacroPart::UrlSpace => f.write_str("%-")?,
                MacroPart::Macro(m) => {
                    let letter = if m.url_escape {
                        m.letter.as_char().to_ascii_uppercase()
                    } else {
                        m.letter.as_char()
                    };
                    write!(f, "%{{{letter}")?;
                    if let Some(keep) = m.keep {
                        write!(f, "{keep}")?;
                    }
                    if m.reverse {
                        f.write_str("r")?;
                    }
                    write!(f, "{}}}", m.delimiters)?;
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for Directive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.qualifier.symbol())?;
        let dual = |f: &mut fmt::Formatter<'_>, c4: u8, c6: u8| -> fmt::Result {
            if c4 != 32 {
                write!(f, "/{c4}")?;
            }
            if c6 != 128 {
                write!(f, "//{c6}")?;
            }
            Ok(())
        };
        match &self.mechanism {
            Mechanism::All => f.write_str("all"),
            Mechanism::Include(d) => write!(f, "include:{d}"),
            Mechanism::Exists(d) => write!(f, "exists:{d}"),
            Mechanism::A {
                domain,
                cidr4,
                cidr6,
            }
            | Mechanism::Mx {
                domain,
                cidr4,
                cidr6,
            } => {
                f.write_str(self.mechanism.name())?;
                if let Some(d) = domain {
                    write!(f, ":{d}")?;
                }
                dual(f, *cidr4, *cidr6)
            }
            Mechanism::Ptr(domain) => {
                f.write_str("ptr")?;
                match domain {
                    Some(d) => write!(f, ":{d}"),
                    None => Ok(()),
                }
            }
            Mechanism::Ip4 { network, prefix } => {
                write!(f, "ip4:{network}")?;
                if *prefix != 32 {
                    write!(f, "/{prefix}")?;
                }
                Ok(())
            }
            Mechanism::Ip6 { network, prefix } => {
                write!(f, "ip6:{network}")?;
                if *prefix != 128 {
                    write!(f, "/{prefix}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Term::Directive(d) => write!(f, "{d}"),
            Term::Redirect(d) => write!(f, "redirect={d}"),
            Term::Explanation(d) => write!(f, "exp={d}"),
            Term::Unknown { name, value } => write!(f, "{name}={value}"),
        }
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("v=spf1")?;
        for term in &self.terms {
            write!(f, " {term}")?;
        }
        Ok(())
    }
}
