//! Pages drawn by hand: text runs and rules placed on A4 pages, then turned into one PDF with
//! the embedded font subsets and a "Page N of M" footer on every page. Pure: the same pages
//! give the same bytes.

use super::font::{Face, printable};
use printpdf::{
    Color, FontId, Greyscale, Line, LinePoint, Mm, Op, PdfDocument, PdfFont, PdfFontHandle,
    PdfPage, PdfSaveOptions, Point, Pt, TextItem,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

// A4 portrait, in points.
pub const PAGE_W: f32 = 595.28;
pub const PAGE_H: f32 = 841.89;
pub const MARGIN: f32 = 50.0;
/// Where the body stops; the footer sits below.
pub const BOTTOM: f32 = 70.0;

enum Item {
    Text {
        x: f32,
        y: f32,
        size: f32,
        face: Face,
        text: String,
    },
    Rule {
        y: f32,
        from: f32,
        to: f32,
        grey: f32,
    },
}

/// Pages being written, a cursor going down the current one, and the characters each face
/// has printed (for its subset).
pub struct Canvas {
    pages: Vec<Vec<Item>>,
    /// The page being drawn on.
    current: usize,
    pub y: f32,
    used: BTreeMap<Face, BTreeSet<char>>,
    /// Characters the font lacks, printed as U+FFFD.
    pub replaced: usize,
}

impl Canvas {
    pub fn new() -> Self {
        Canvas {
            pages: vec![Vec::new()],
            current: 0,
            y: PAGE_H - MARGIN,
            used: BTreeMap::new(),
            replaced: 0,
        }
    }

    pub fn advance(&mut self, by: f32) {
        self.y -= by;
    }

    /// Whether `height` more fits above the bottom margin.
    pub fn fits(&self, height: f32) -> bool {
        self.y - height >= BOTTOM
    }

    pub fn new_page(&mut self) {
        self.pages.push(Vec::new());
        self.current = self.pages.len() - 1;
        self.y = PAGE_H - MARGIN;
    }

    /// `s` with its left edge at `x`, on the cursor's line.
    pub fn text(&mut self, x: f32, size: f32, face: Face, s: &str) {
        let (text, replaced) = printable(s, face);
        self.place(x, size, face, text, replaced);
    }

    /// `s` with its right edge at `right`.
    pub fn right(&mut self, right: f32, size: f32, face: Face, s: &str) {
        let (text, replaced) = printable(s, face);
        let x = right - face.width(&text, size);
        self.place(x, size, face, text, replaced);
    }

    /// Text already made printable, its replaced characters counted.
    fn place(&mut self, x: f32, size: f32, face: Face, text: String, replaced: usize) {
        self.replaced += replaced;
        self.used.entry(face).or_default().extend(text.chars());
        let y = self.y;
        self.page().push(Item::Text {
            x,
            y,
            size,
            face,
            text,
        });
    }

    /// A horizontal line `below` points under the cursor's baseline.
    pub fn rule(&mut self, from: f32, to: f32, below: f32, grey: f32) {
        let y = self.y - below;
        self.page().push(Item::Rule { y, from, to, grey });
    }

    fn page(&mut self) -> &mut Vec<Item> {
        &mut self.pages[self.current]
    }

    /// The PDF: every page gets `footer_left` and "Page N of M"; metadata carry the title and
    /// the issue date; the trailer's id derives from `key`, so equal input gives equal bytes.
    pub fn finish(
        mut self,
        title: &str,
        key: &str,
        footer_left: &str,
        date: chrono::NaiveDate,
    ) -> Result<Vec<u8>, String> {
        let count = self.pages.len();
        for i in 0..count {
            self.current = i;
            self.y = BOTTOM - 28.0;
            self.rule(MARGIN, PAGE_W - MARGIN, -12.0, 0.7);
            self.text(MARGIN, 8.0, Face::Regular, footer_left);
            let label = format!("{key} · Page {} of {count}", i + 1);
            self.right(PAGE_W - MARGIN, 8.0, Face::Regular, &label);
        }

        let mut pdf = PdfDocument::new(title);
        let mut ids = BTreeMap::new();
        for (face, chars) in &self.used {
            let id = FontId(match face {
                Face::Regular => "BRSANS+DejaVuSans".into(),
                Face::Bold => "BRBOLD+DejaVuSans-Bold".into(),
            });
            let font = face.subset(chars)?;
            pdf.resources
                .fonts
                .map
                .insert(id.clone(), PdfFont::new(font));
            ids.insert(*face, id);
        }
        let pages = self
            .pages
            .into_iter()
            .map(|items| {
                let ops = items.into_iter().flat_map(|i| ops(i, &ids)).collect();
                PdfPage::new(Mm(210.0), Mm(297.0), ops)
            })
            .collect();
        let date = {
            use chrono::Datelike;
            printpdf::DateTime {
                date: printpdf::Date {
                    year: date.year(),
                    month: date.month() as u8,
                    day: date.day() as u8,
                },
                ..printpdf::DateTime::epoch()
            }
        };
        let info = &mut pdf.metadata.info;
        info.creation_date = date;
        info.modification_date = date;
        info.metadata_date = date;
        info.producer = "billrun".into();
        info.creator = "billrun".into();
        // printpdf's own `optimize` deflates every stream at level 9, most of a PDF's cost;
        // level 1 makes files a few percent larger at a fraction of the time.
        let options = PdfSaveOptions {
            optimize: false,
            ..PdfSaveOptions::default()
        };
        let mut doc = pdf
            .with_pages(pages)
            .to_lopdf_document(&options, &mut Vec::new());
        compress_streams(&mut doc);
        let mut bytes = Vec::new();
        doc.save_to(&mut bytes).map_err(|e| format!("pdf: {e}"))?;
        stable_id(&mut bytes, key);
        Ok(bytes)
    }
}

/// Deflate every stream that may be compressed and is not yet, at the fastest level, when it
/// gets smaller. Large streams recur — the common font subsets are in nearly every PDF — so
/// they are deflated once per process and looked up after.
fn compress_streams(doc: &mut lopdf::Document) {
    for object in doc.objects.values_mut() {
        let lopdf::Object::Stream(stream) = object else {
            continue;
        };
        if !stream.allows_compression || stream.dict.get(b"Filter").is_ok() {
            continue;
        }
        let compressed = if stream.content.len() >= RECURRING {
            deflate_recurring(&stream.content)
        } else {
            deflate(&stream.content).map(Arc::from)
        };
        if let Some(compressed) = compressed
            && compressed.len() + 19 < stream.content.len()
        {
            stream.dict.set("Filter", "FlateDecode");
            stream.set_content(compressed.to_vec());
        }
    }
}

/// Streams at least this long go through [`deflate_recurring`].
const RECURRING: usize = 4096;

/// Recently deflated large streams (content, deflated), most recent first.
type Deflated = Vec<(Arc<[u8]>, Arc<[u8]>)>;
static DEFLATED: Mutex<Deflated> = Mutex::new(Vec::new());
const DEFLATED_KEPT: usize = 8;

fn deflate_recurring(content: &[u8]) -> Option<Arc<[u8]>> {
    let mut kept = DEFLATED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(i) = kept.iter().position(|(c, _)| **c == *content) {
        let hit = kept.remove(i);
        let deflated = hit.1.clone();
        kept.insert(0, hit);
        return Some(deflated);
    }
    drop(kept);
    let deflated: Arc<[u8]> = deflate(content)?.into();
    let mut kept = DEFLATED.lock().unwrap_or_else(|p| p.into_inner());
    kept.insert(0, (content.into(), deflated.clone()));
    kept.truncate(DEFLATED_KEPT);
    Some(deflated)
}

fn deflate(content: &[u8]) -> Option<Vec<u8>> {
    use flate2::{Compression, write::ZlibEncoder};
    use std::io::Write;
    let mut encoder = ZlibEncoder::new(Vec::with_capacity(content.len() / 2), Compression::fast());
    encoder.write_all(content).ok()?;
    encoder.finish().ok()
}

fn ops(item: Item, fonts: &BTreeMap<Face, FontId>) -> Vec<Op> {
    match item {
        Item::Text {
            x,
            y,
            size,
            face,
            text,
        } => vec![
            // One text object per run: BT resets the text matrix, so `Td` is absolute.
            Op::StartTextSection,
            Op::SetFont {
                font: PdfFontHandle::External(fonts[&face].clone()),
                size: Pt(size),
            },
            Op::SetTextCursor {
                pos: Point { x: Pt(x), y: Pt(y) },
            },
            Op::ShowText {
                items: vec![TextItem::Text(text)],
            },
            Op::EndTextSection,
        ],
        Item::Rule { y, from, to, grey } => {
            let at = |x: f32| LinePoint {
                p: Point { x: Pt(x), y: Pt(y) },
                bezier: false,
            };
            vec![
                Op::SetOutlineColor {
                    col: Color::Greyscale(Greyscale::new(grey, None)),
                },
                Op::SetOutlineThickness { pt: Pt(0.5) },
                Op::DrawLine {
                    line: Line {
                        points: vec![at(from), at(to)],
                        is_closed: false,
                    },
                },
            ]
        }
    }
}

/// printpdf fills the trailer's `/ID` from a process-wide counter, so the same document would
/// come out different on a resend. Both ids are overwritten in place, same length, with ones
/// derived from the document number: equal input, equal bytes.
fn stable_id(bytes: &mut [u8], number: &str) {
    let Some(at) = bytes.windows(3).rposition(|w| w == b"/ID") else {
        return;
    };
    // FNV-1a, spread over 32 letters like printpdf's own ids.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in number.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut i = at;
    for _ in 0..2 {
        let Some(open) = bytes[i..].iter().position(|&b| b == b'(').map(|p| p + i) else {
            return;
        };
        let Some(close) = bytes[open..]
            .iter()
            .position(|&b| b == b')')
            .map(|p| p + open)
        else {
            return;
        };
        for b in &mut bytes[open + 1..close] {
            h = (h ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0x0100_0000_01b3);
            *b = b'A' + (h >> 59) as u8 % 26;
        }
        i = close + 1;
    }
}

/// Split `s` into lines no wider than `max` points at `size`, at spaces where possible.
pub fn wrap(s: &str, face: Face, size: f32, max: f32) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in s.split('\n') {
        let mut current = String::new();
        for word in paragraph.split(' ').filter(|w| !w.is_empty()) {
            let candidate = if current.is_empty() {
                word.to_string()
            } else {
                format!("{current} {word}")
            };
            if face.width(&candidate, size) <= max {
                current = candidate;
                continue;
            }
            if !current.is_empty() {
                lines.push(std::mem::take(&mut current));
            }
            // A word wider than the column is cut wherever it has to be.
            for c in word.chars() {
                current.push(c);
                if face.width(&current, size) > max && current.chars().count() > 1 {
                    current.pop();
                    lines.push(std::mem::replace(&mut current, c.to_string()));
                }
            }
        }
        lines.push(current);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_every_line_inside_the_column() {
        let text = "word ".repeat(60) + &"x".repeat(200);
        let lines = wrap(&text, Face::Regular, 10.0, 200.0);
        assert!(lines.len() > 3);
        assert!(lines.iter().all(|l| Face::Regular.width(l, 10.0) <= 200.0));
        assert_eq!(lines.concat().replace(' ', ""), text.replace(' ', ""));
        assert_eq!(wrap("", Face::Regular, 10.0, 200.0), vec![String::new()]);
        assert_eq!(wrap("a\nb", Face::Regular, 10.0, 200.0), vec!["a", "b"]);
    }
}
