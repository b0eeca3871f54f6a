//! Login QR codes: drawing one from its text (as Unicode half blocks for a
//! terminal) and finding and reading one in a screenshot. Pure functions
//! over text and pixels: no I/O, no browser, no session, and nothing here
//! knows which web app drew the code (the fixture draws its own).
//!
//! Encoding is the `qrcode` crate, decoding `rqrr`, PNG the `png` crate;
//! the README ("Login QR codes") says why these.

use std::fmt::Write as _;
use std::io::Cursor;

use rqrr::BitGrid;

/// Light modules around a code, as the QR specification asks: without
/// them a phone may not find the code at all.
pub const QUIET_ZONE: usize = 4;

/// Screenshots larger than this are refused rather than decoded: a page is
/// a few thousand pixels wide at most.
const MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// Why a code could not be drawn, or an image not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QrError {
    #[error("cannot encode {len} bytes as a QR code: {reason}")]
    Encode { len: usize, reason: String },
    #[error("the screenshot is not a readable PNG: {0}")]
    Image(#[from] png::DecodingError),
    #[error("the screenshot is {width}x{height} pixels, too large to search for a QR code")]
    TooLarge { width: u32, height: u32 },
    #[error("cannot write the QR code's PNG: {0}")]
    Png(#[from] png::EncodingError),
    /// The decoder crashed on this image (a bug in it, caught here so a
    /// strange page cannot take its caller down).
    #[error("the QR decoder failed on a {width}x{height} screenshot")]
    DecoderFailed { width: usize, height: usize },
}

/// The modules of one QR code, without its quiet zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Modules {
    width: usize,
    dark: Vec<bool>,
}

impl Modules {
    /// The smallest code holding `text`, with medium error correction (the
    /// usual choice for codes shown on screens).
    pub fn encode(text: &str) -> Result<Self, QrError> {
        let code =
            qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::M).map_err(|e| {
                QrError::Encode {
                    len: text.len(),
                    reason: e.to_string(),
                }
            })?;
        let width = code.width();
        let dark = code
            .into_colors()
            .into_iter()
            .map(|c| c == qrcode::Color::Dark)
            .collect();
        Ok(Self { width, dark })
    }

    /// Modules per side, quiet zone not included.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Whether the module at column `x`, row `y` is dark; anything outside
    /// the code (the quiet zone) is light.
    pub fn is_dark(&self, x: isize, y: isize) -> bool {
        let inside = |v: isize| usize::try_from(v).ok().filter(|v| *v < self.width);
        match (inside(x), inside(y)) {
            (Some(x), Some(y)) => self.dark[y * self.width + x],
            _ => false,
        }
    }

    /// The code for a terminal: two rows of modules per line with the
    /// upper half block, quiet zone included, every cell coloured
    /// explicitly (256-colour black and white, which themes do not remap),
    /// so a phone reads it on a dark terminal as well as on a light one.
    /// Each line ends by resetting the colours.
    pub fn to_half_blocks(&self) -> String {
        const DARK: u8 = 16;
        const LIGHT: u8 = 231;
        let colour = |dark: bool| if dark { DARK } else { LIGHT };
        let edge = QUIET_ZONE as isize;
        let end = (self.width + QUIET_ZONE) as isize;
        let mut out = String::new();
        let mut y = -edge;
        while y < end {
            let mut current = None;
            for x in -edge..end {
                let cell = (colour(self.is_dark(x, y)), colour(self.is_dark(x, y + 1)));
                if current != Some(cell) {
                    let _ = write!(out, "\x1b[38;5;{};48;5;{}m", cell.0, cell.1);
                    current = Some(cell);
                }
                out.push('▀');
            }
            out.push_str("\x1b[0m\n");
            y += 2;
        }
        out
    }
}

/// A QR code found in a screenshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundQr {
    /// What the code says, as a phone scanning it would read it.
    pub text: String,
    /// The code cut out of the screenshot with its quiet zone, as a
    /// greyscale PNG.
    pub png: Vec<u8>,
}

/// Finds the first readable QR code in a PNG screenshot. `Ok(None)` when
/// the image shows none (or none that decodes).
pub fn find_in_png(screenshot: &[u8]) -> Result<Option<FoundQr>, QrError> {
    let image = Luma::from_png(screenshot)?;
    let read = std::panic::catch_unwind(|| {
        let mut prepared =
            rqrr::PreparedImage::prepare_from_greyscale(image.width, image.height, |x, y| {
                image.at(x, y)
            });
        prepared.detect_grids().into_iter().find_map(|grid| {
            let (_, text) = grid.decode().ok()?;
            Some((text, grid.bounds, grid.grid.size()))
        })
    })
    .map_err(|_| QrError::DecoderFailed {
        width: image.width,
        height: image.height,
    })?;
    let Some((text, bounds, modules)) = read else {
        return Ok(None);
    };
    let png = image.crop_around(&bounds, modules).to_png()?;
    Ok(Some(FoundQr { text, png }))
}

/// A greyscale image, one byte per pixel, rows top to bottom.
struct Luma {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Luma {
    fn from_png(bytes: &[u8]) -> Result<Self, QrError> {
        let mut decoder = png::Decoder::new(Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let header = decoder.read_header_info()?;
        let (width, height) = (header.width, header.height);
        if u64::from(width) * u64::from(height) > MAX_PIXELS {
            return Err(QrError::TooLarge { width, height });
        }
        let mut reader = decoder.read_info()?;
        let size = reader
            .output_buffer_size()
            .ok_or(QrError::TooLarge { width, height })?;
        let mut buffer = vec![0; size];
        let frame = reader.next_frame(&mut buffer)?;
        let bytes = &buffer[..frame.buffer_size()];
        let channels = frame.color_type.samples();
        let line = frame.line_size;
        let (w, h) = (frame.width as usize, frame.height as usize);
        let mut pixels = Vec::with_capacity(w * h);
        for row in bytes.chunks_exact(line).take(h) {
            for px in row[..w * channels].chunks_exact(channels) {
                pixels.push(luma(px));
            }
        }
        Ok(Self {
            width: w,
            height: h,
            pixels,
        })
    }

    fn at(&self, x: usize, y: usize) -> u8 {
        self.pixels[y * self.width + x]
    }

    /// The box around `corners` widened by the quiet zone (in modules of a
    /// code `modules` wide), within the image.
    fn crop_around(&self, corners: &[rqrr::Point; 4], modules: usize) -> Luma {
        let xs = corners.iter().map(|p| p.x);
        let ys = corners.iter().map(|p| p.y);
        let (x0, x1) = (xs.clone().min().unwrap_or(0), xs.max().unwrap_or(0));
        let (y0, y1) = (ys.clone().min().unwrap_or(0), ys.max().unwrap_or(0));
        let module = ((x1 - x0).max(y1 - y0) as f64 / modules.max(1) as f64).max(1.0);
        let margin = (module * QUIET_ZONE as f64).round() as i32;
        let clamp = |v: i32, max: usize| v.clamp(0, max as i32) as usize;
        let (left, right) = (
            clamp(x0 - margin, self.width),
            clamp(x1 + margin, self.width),
        );
        let (top, bottom) = (
            clamp(y0 - margin, self.height),
            clamp(y1 + margin, self.height),
        );
        let (width, height) = (right - left, bottom - top);
        let mut pixels = Vec::with_capacity(width * height);
        for y in top..bottom {
            pixels.extend_from_slice(&self.pixels[y * self.width + left..y * self.width + right]);
        }
        Luma {
            width,
            height,
            pixels,
        }
    }

    fn to_png(&self) -> Result<Vec<u8>, QrError> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&self.pixels)?;
        writer.finish()?;
        Ok(out)
    }
}

/// Perceived brightness of one pixel (grey, grey+alpha, RGB or RGBA,
/// 8 bits a sample), transparency shown over white as a browser would.
fn luma(px: &[u8]) -> u8 {
    let (grey, alpha) = match *px {
        [g] => (u32::from(g), 255),
        [g, a] => (u32::from(g), u32::from(a)),
        [r, g, b] => (rgb(r, g, b), 255),
        [r, g, b, a] => (rgb(r, g, b), u32::from(a)),
        _ => (255, 255),
    };
    ((grey * alpha + 255 * (255 - alpha)) / 255) as u8
}

fn rgb(r: u8, g: u8, b: u8) -> u32 {
    (299 * u32::from(r) + 587 * u32::from(g) + 114 * u32::from(b)) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paints `modules` `scale` pixels per module, with its quiet zone and
    /// `pad` more white pixels around, as an RGBA PNG.
    fn screenshot_of(modules: &Modules, scale: usize, pad: usize) -> Vec<u8> {
        let side = (modules.width() + 2 * QUIET_ZONE) * scale + 2 * pad;
        let mut rgba = Vec::with_capacity(side * side * 4);
        for py in 0..side {
            for px in 0..side {
                let module = |p: usize| {
                    (p as isize - pad as isize).div_euclid(scale as isize) - QUIET_ZONE as isize
                };
                let v = if modules.is_dark(module(px), module(py)) {
                    0
                } else {
                    255
                };
                rgba.extend_from_slice(&[v, v, v, 255]);
            }
        }
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, side as u32, side as u32);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&rgba).unwrap();
        writer.finish().unwrap();
        out
    }

    #[test]
    fn a_drawn_code_is_read_back_with_its_text() {
        let text = "2@Q7x+/AbC,ABCDEF0123456789==,e-1";
        let modules = Modules::encode(text).unwrap();
        let found = find_in_png(&screenshot_of(&modules, 4, 40))
            .unwrap()
            .expect("a code is found");
        assert_eq!(found.text, text);
        let again = find_in_png(&found.png)
            .unwrap()
            .expect("the cut-out reads too");
        assert_eq!(again.text, text);
    }

    #[test]
    fn an_image_without_a_code_has_none() {
        let blank = Modules {
            width: 21,
            dark: vec![false; 21 * 21],
        };
        assert_eq!(find_in_png(&screenshot_of(&blank, 3, 10)).unwrap(), None);
        assert!(matches!(find_in_png(b"not a png"), Err(QrError::Image(_))));
    }

    #[test]
    fn half_blocks_carry_two_rows_per_line_with_explicit_colours() {
        let modules = Modules::encode("ABC").unwrap();
        let drawn = modules.to_half_blocks();
        let side = modules.width() + 2 * QUIET_ZONE;
        let lines: Vec<&str> = drawn.lines().collect();
        assert_eq!(lines.len(), side.div_ceil(2));
        for line in &lines {
            assert_eq!(line.matches('▀').count(), side, "{line:?}");
            assert!(line.ends_with("\x1b[0m"));
        }
        // The first line is all quiet zone: light over light.
        assert!(lines[0].starts_with("\x1b[38;5;231;48;5;231m▀"));
        // The top-left finder pattern starts dark after the quiet zone.
        assert!(lines[2].contains("\x1b[38;5;16;48;5;16m"), "{}", lines[2]);
    }
}
