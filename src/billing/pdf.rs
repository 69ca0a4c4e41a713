//! Invoice PDFs, written with `pdf-writer`: A4 pages in the standard Helvetica font (nothing
//! embedded), with the number, dates, customer, lines and totals.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str};

/// What goes on the PDF, already formatted.
pub struct PdfInvoice {
    pub number: String,
    pub status: String,
    pub seller: String,
    pub customer_id: String,
    pub customer_name: Option<String>,
    pub customer_email: Option<String>,
    pub issued: String,
    pub due: Option<String>,
    pub period: String,
    pub currency: String,
    /// (description, quantity, unit amount, amount)
    pub lines: Vec<(String, String, String, String)>,
    pub subtotal: String,
    pub total: String,
    /// Shown only when not zero.
    pub credit_applied: String,
    /// Shown only when not zero.
    pub credit_notes_total: String,
    pub amount_due: String,
}

const WIDTH: f32 = 595.0;
const HEIGHT: f32 = 842.0;
const LINES_PER_PAGE: usize = 30;

/// The standard fonts are WinAnsi-encoded; anything outside printable ASCII becomes `?`, and
/// long text is cut.
fn text(s: &str, max: usize) -> Vec<u8> {
    let mut out: Vec<u8> = s
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c as u8
            } else {
                b'?'
            }
        })
        .collect();
    if out.len() > max {
        out.truncate(max.saturating_sub(3));
        out.extend_from_slice(b"...");
    }
    out
}

struct Writer {
    content: Content,
}

impl Writer {
    fn at(&mut self, font: &[u8], size: f32, x: f32, y: f32, s: &str, max: usize) {
        self.content.begin_text();
        self.content.set_font(Name(font), size);
        self.content.next_line(x, y);
        self.content.show(Str(&text(s, max)));
        self.content.end_text();
    }

    /// Right-aligned (approximately: Helvetica digits are 0.556 em wide).
    fn right(&mut self, font: &[u8], size: f32, right_x: f32, y: f32, s: &str) {
        let width = s.len() as f32 * size * 0.556;
        self.at(font, size, right_x - width, y, s, 40);
    }
}

pub fn render(inv: &PdfInvoice) -> Vec<u8> {
    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let regular = Ref::new(3);
    let bold = Ref::new(4);
    let chunks: Vec<&[(String, String, String, String)]> = if inv.lines.is_empty() {
        vec![&[]]
    } else {
        inv.lines.chunks(LINES_PER_PAGE).collect()
    };
    let pages: Vec<(Ref, Ref)> = (0..chunks.len() as i32)
        .map(|i| (Ref::new(10 + 2 * i), Ref::new(11 + 2 * i)))
        .collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(pages.iter().map(|(p, _)| *p))
        .count(pages.len() as i32);
    for font in [(regular, "Helvetica"), (bold, "Helvetica-Bold")] {
        pdf.type1_font(font.0)
            .base_font(Name(font.1.as_bytes()))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    let count = pages.len();
    for (n, ((page_id, content_id), lines)) in pages.iter().zip(chunks).enumerate() {
        let mut page = pdf.page(*page_id);
        page.media_box(Rect::new(0.0, 0.0, WIDTH, HEIGHT));
        page.parent(tree);
        page.contents(*content_id);
        {
            let mut resources = page.resources();
            let mut fonts = resources.fonts();
            fonts.pair(Name(b"F1"), regular);
            fonts.pair(Name(b"F2"), bold);
        }
        page.finish();

        let mut w = Writer {
            content: Content::new(),
        };
        let mut y = HEIGHT - 60.0;
        w.at(b"F2", 20.0, 50.0, y, &format!("Invoice {}", inv.number), 60);
        w.right(
            b"F1",
            10.0,
            WIDTH - 50.0,
            y,
            &format!("Page {} of {count}", n + 1),
        );
        y -= 30.0;
        for (label, value) in [
            ("From", inv.seller.clone()),
            ("Status", inv.status.clone()),
            ("Issued", inv.issued.clone()),
            ("Due", inv.due.clone().unwrap_or_else(|| "-".into())),
            ("Period", inv.period.clone()),
        ] {
            w.at(b"F2", 10.0, 50.0, y, label, 20);
            w.at(b"F1", 10.0, 130.0, y, &value, 80);
            y -= 15.0;
        }
        y -= 10.0;
        w.at(b"F2", 10.0, 50.0, y, "Bill to", 20);
        let mut bill_to = vec![inv.customer_id.clone()];
        bill_to.extend(inv.customer_name.clone());
        bill_to.extend(inv.customer_email.clone());
        for line in bill_to {
            w.at(b"F1", 10.0, 130.0, y, &line, 80);
            y -= 15.0;
        }
        y -= 15.0;
        w.at(b"F2", 10.0, 50.0, y, "Description", 20);
        w.right(b"F2", 10.0, 380.0, y, "Qty");
        w.right(b"F2", 10.0, 460.0, y, "Unit");
        w.right(b"F2", 10.0, WIDTH - 50.0, y, "Amount");
        y -= 18.0;
        for (description, qty, unit, amount) in lines {
            w.at(b"F1", 9.0, 50.0, y, description, 58);
            w.right(b"F1", 9.0, 380.0, y, qty);
            w.right(b"F1", 9.0, 460.0, y, unit);
            w.right(b"F1", 9.0, WIDTH - 50.0, y, amount);
            y -= 15.0;
        }
        if n + 1 == count {
            y -= 15.0;
            let cur = inv.currency.to_uppercase();
            let zero = |v: &str| {
                v.trim_start_matches('-')
                    .chars()
                    .all(|c| c == '0' || c == '.')
            };
            let credits = [
                ("Credit applied", &inv.credit_applied),
                ("Credit notes", &inv.credit_notes_total),
            ];
            let rows = [("Subtotal", &inv.subtotal), ("Total", &inv.total)]
                .into_iter()
                .chain(credits.into_iter().filter(|(_, v)| !zero(v)))
                .chain([("Amount due", &inv.amount_due)]);
            for (label, value) in rows {
                w.at(b"F2", 10.0, 360.0, y, label, 20);
                w.right(b"F1", 10.0, WIDTH - 50.0, y, &format!("{value} {cur}"));
                y -= 15.0;
            }
        }
        pdf.stream(*content_id, &w.content.finish());
    }
    pdf.finish()
}
