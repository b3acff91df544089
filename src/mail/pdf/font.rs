//! The font of the PDFs: DejaVu Sans, regular and bold (`assets/fonts/`), compiled in. It
//! covers Latin, Greek and Cyrillic, so names and addresses print as written.
//!
//! Each PDF embeds a subset: the glyphs its text uses, cut out with allsorts (a few kilobytes
//! instead of 700), without the hinting programs (viewers scale outlines themselves). Cutting
//! from the whole font would read its 6,000 glyphs for every PDF, so once per process each
//! face is first cut down to the scripts invoices print — Latin, Greek, Cyrillic and their
//! extensions, punctuation, currency and number signs ([`SCRIPTS`]) — and every PDF's subset
//! is cut from that. The same base gives the character map and advance widths the layout
//! needs to right-align amounts and wrap text. A character outside it is printed as U+FFFD,
//! never dropped, and counted so the caller can say so.

use printpdf::ParsedFont;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

const REGULAR_TTF: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");
const BOLD_TTF: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans-Bold.ttf");

/// What a character the font lacks is shown as.
pub const MISSING: char = char::REPLACEMENT_CHARACTER;

/// The Unicode ranges the base fonts keep (see the module header).
const SCRIPTS: &[(u32, u32)] = &[
    (0x0020, 0x036F), // Latin, Latin-1, Latin Extended-A/B, IPA, modifiers, combining marks
    (0x0370, 0x03FF), // Greek and Coptic
    (0x0400, 0x052F), // Cyrillic and its supplement
    (0x1E00, 0x1FFF), // Latin Extended Additional, Greek Extended
    (0x2000, 0x215F), // punctuation, super/subscripts, currency, letterlike, fractions
    (0x2190, 0x21FF), // arrows
    (0x2200, 0x22FF), // mathematical operators
    (0xFFFD, 0xFFFD), // the replacement character
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Face {
    Regular,
    Bold,
}

impl Face {
    #[cfg(test)]
    pub const ALL: [Face; 2] = [Face::Regular, Face::Bold];

    /// The base font: the whole font cut down to [`SCRIPTS`], once per process.
    fn bytes(self) -> &'static [u8] {
        static REGULAR: OnceLock<Vec<u8>> = OnceLock::new();
        static BOLD: OnceLock<Vec<u8>> = OnceLock::new();
        let (cell, ttf) = match self {
            Face::Regular => (&REGULAR, REGULAR_TTF),
            Face::Bold => (&BOLD, BOLD_TTF),
        };
        cell.get_or_init(|| {
            let whole = Metrics::parse(ttf);
            let glyphs: BTreeSet<u16> = SCRIPTS
                .iter()
                .flat_map(|&(from, to)| from..=to)
                .filter_map(|cp| whole.glyphs.get(&cp).copied())
                .filter(|&g| g != 0)
                .collect();
            // The fonts are compiled in and tested; failing here is a build defect.
            cut(ttf, &glyphs, true).expect("the bundled font subsets")
        })
    }

    /// The base font's character map and widths, parsed on first use.
    fn metrics(self) -> &'static Metrics {
        static REGULAR: OnceLock<Metrics> = OnceLock::new();
        static BOLD: OnceLock<Metrics> = OnceLock::new();
        let cell = match self {
            Face::Regular => &REGULAR,
            Face::Bold => &BOLD,
        };
        cell.get_or_init(|| Metrics::parse(self.bytes()))
    }

    /// The glyph of `c`, if the font has one.
    pub fn glyph(self, c: char) -> Option<u16> {
        self.metrics()
            .glyphs
            .get(&u32::from(c))
            .copied()
            .filter(|&g| g != 0)
    }

    /// Width of `s` in points at `size`, as printed (missing characters as [`MISSING`]).
    pub fn width(self, s: &str, size: f32) -> f32 {
        let m = self.metrics();
        let units: u32 = s
            .chars()
            .map(|c| {
                let g = self.glyph(c).or_else(|| self.glyph(MISSING)).unwrap_or(0);
                u32::from(m.widths.get(&g).copied().unwrap_or(m.default_width))
            })
            .sum();
        units as f32 * size / f32::from(m.units_per_em)
    }

    /// The font cut down to the glyphs of `chars`, parsed for printpdf. Most documents print
    /// only [`COMMON`] characters: they all get the subset of those, cut once per process
    /// (and its stream deflated once, see `canvas`), a few kilobytes more per PDF for a
    /// fraction of the time.
    pub fn subset(self, chars: &BTreeSet<char>) -> Result<ParsedFont, String> {
        static REGULAR: OnceLock<Result<ParsedFont, String>> = OnceLock::new();
        static BOLD: OnceLock<Result<ParsedFont, String>> = OnceLock::new();
        let common = || COMMON.iter().flat_map(|&(from, to)| from..=to);
        if chars.iter().all(|&c| is_common(c)) {
            let cell = match self {
                Face::Regular => &REGULAR,
                Face::Bold => &BOLD,
            };
            return cell
                .get_or_init(|| self.cut_to(common().filter_map(|cp| self.glyph_of(cp))))
                .clone();
        }
        // Anything else: the glyphs it prints, no more (a few kilobytes).
        self.cut_to(chars.iter().filter_map(|&c| self.glyph(c)))
    }

    fn glyph_of(self, code_point: u32) -> Option<u16> {
        char::from_u32(code_point).and_then(|c| self.glyph(c))
    }

    fn cut_to(self, glyphs: impl Iterator<Item = u16>) -> Result<ParsedFont, String> {
        let bytes = cut(self.bytes(), &glyphs.collect(), false)?;
        ParsedFont::from_bytes(&bytes, 0, &mut Vec::new())
            .ok_or_else(|| "font subset does not parse".to_string())
    }
}

/// The characters of the shared subsets: ASCII and the signs billrun's own text prints
/// (no-break space, middle dot, multiplication sign, dashes, quotes, bullet, ellipsis, euro).
/// Latin-1 letters would double the subset for the names that need them; those documents
/// get their own.
const COMMON: &[(u32, u32)] = &[
    (0x0020, 0x007E),
    (0x00A0, 0x00A0),
    (0x00B7, 0x00B7),
    (0x00D7, 0x00D7),
    (0x2013, 0x2014),
    (0x2018, 0x201D),
    (0x2022, 0x2022),
    (0x2026, 0x2026),
    (0x20AC, 0x20AC),
];

fn is_common(c: char) -> bool {
    let cp = u32::from(c);
    COMMON.iter().any(|&(from, to)| (from..=to).contains(&cp))
}

/// `ttf` cut down to `glyphs` with a Unicode character map; `keep_hinting` keeps the hinting
/// programs and the naming table (for the base font, cut again later).
fn cut(ttf: &[u8], glyphs: &BTreeSet<u16>, keep_hinting: bool) -> Result<Vec<u8>, String> {
    use allsorts::binary::read::ReadScope;
    use allsorts::font_data::FontData;
    use allsorts::subset::{CmapTarget, SubsetProfile, subset};
    use allsorts::tag;
    // Glyph 0 (.notdef) first, then the glyphs in ascending order, once each.
    let ids: Vec<u16> = std::iter::once(0)
        .chain(glyphs.iter().copied().filter(|&g| g != 0))
        .collect();
    let font = ReadScope::new(ttf)
        .read::<FontData<'_>>()
        .map_err(|e| format!("font: {e}"))?;
    let provider = font.table_provider(0).map_err(|e| format!("font: {e}"))?;
    let profile = if keep_hinting {
        SubsetProfile::Pdf
    } else {
        SubsetProfile::Custom(vec![tag::CMAP, tag::HEAD, tag::HHEA, tag::HMTX, tag::MAXP])
    };
    subset(&provider, &ids, &profile, CmapTarget::Unicode).map_err(|e| format!("font subset: {e}"))
}

/// `s` as it will print: whitespace as a space, control characters dropped from view as
/// [`MISSING`] like any character the font lacks; returns how many were replaced.
pub fn printable(s: &str, face: Face) -> (String, usize) {
    let mut missing = 0;
    let out = s
        .chars()
        .map(|c| {
            if c.is_whitespace() {
                ' '
            } else if !c.is_control() && face.glyph(c).is_some() {
                c
            } else {
                missing += 1;
                MISSING
            }
        })
        .collect();
    (out, missing)
}

struct Metrics {
    glyphs: BTreeMap<u32, u16>,
    widths: BTreeMap<u16, u16>,
    default_width: u16,
    units_per_em: u16,
}

impl Metrics {
    fn parse(bytes: &[u8]) -> Metrics {
        // The fonts are compiled in and tested; failing here is a build defect.
        let font = ParsedFont::from_bytes(bytes, 0, &mut Vec::new()).expect("bundled font parses");
        let default_width = font.glyph_widths.get(&0).copied().unwrap_or(600);
        Metrics {
            glyphs: font.codepoint_to_glyph,
            widths: font.glyph_widths,
            default_width,
            units_per_em: font.units_per_em.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin_greek_and_cyrillic_have_glyphs_in_both_faces() {
        for face in Face::ALL {
            for c in "Zoë Łukasiewicz Ωmega Юрий ul. Żółta 3 €".chars() {
                assert!(c == ' ' || face.glyph(c).is_some(), "{face:?} lacks {c:?}");
            }
            assert!(face.glyph(MISSING).is_some());
        }
    }

    #[test]
    fn what_the_font_lacks_is_replaced_and_counted() {
        let (s, n) = printable("a日b\tc\u{1b}", Face::Regular);
        assert_eq!((s.as_str(), n), ("a\u{fffd}b c\u{fffd}", 2));
    }

    #[test]
    fn a_subset_is_small_and_maps_its_characters() {
        let chars: BTreeSet<char> = "Юрий Invoice 0123456789".chars().collect();
        let font = Face::Regular.subset(&chars).unwrap();
        assert!(
            font.original_bytes.len() < 40_000,
            "{} bytes",
            font.original_bytes.len()
        );
        for c in chars.iter().filter(|c| **c != ' ') {
            assert!(font.lookup_glyph_index(u32::from(*c)).is_some(), "{c:?}");
        }
        assert!(Face::Bold.width("Юрий", 10.0) > Face::Regular.width("ий", 10.0));
    }
}
