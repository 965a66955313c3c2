//! Headless Chromium and the facts of a PNG it wrote.

use super::*;

// ------------------------------------------------------------------------------------------
// headless chromium and PNG

/// The headless Chromium binary (Debian's `chromium-headless-shell`, else `chromium`).
pub fn chromium() -> Option<PathBuf> {
    ["chromium-headless-shell", "chromium"]
        .iter()
        .find_map(|t| which(t))
        .or_else(|| {
            [
                "/usr/lib/chromium/chromium-headless-shell",
                "/usr/lib/chromium/chromium",
            ]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
        })
}

/// Runs headless Chromium on `url` with `args` (`--screenshot=FILE`, `--dump-dom`).
pub fn run_chromium(bin: &Path, args: &[&str], url: &str) -> CmdOutput {
    let profile = temp_dir("acr-chromium-");
    let mut cmd = Command::new(bin);
    cmd.args([
        "--no-sandbox",
        "--headless",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .arg(url)
    .env("HOME", profile.path());
    run_cmd(cmd, CMD_TIMEOUT)
}

/// What [`png_facts`] found in a PNG.
#[derive(Debug)]
pub struct PngFacts {
    pub width: u32,
    pub height: u32,
    pub bit_depth: u8,
    pub color_type: u8,
    /// Distinct pixel values, decoded (python3's zlib inflates the IDAT stream; the
    /// scanline filters are undone).
    pub distinct_colours: usize,
}

/// Checks the PNG signature and reads the IHDR in Rust, then decodes the pixels with a small
/// python3 script (standard library only) to count distinct colours.
pub fn png_facts(path: &Path) -> PngFacts {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG (first bytes {:?})",
        path.display(),
        &bytes[..bytes.len().min(8)]
    );
    assert_eq!(&bytes[12..16], b"IHDR", "the first chunk is not IHDR");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    let (width, height, bit_depth, color_type) = (be(16), be(20), bytes[24], bytes[25]);
    const DECODE: &str = r#"
import sys, zlib, struct
data = open(sys.argv[1], 'rb').read()
pos, idat = 8, b''
while pos < len(data):
    n, kind = struct.unpack('>I4s', data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b'IHDR':
        w, h, depth, ctype, _, _, interlace = struct.unpack('>IIBBBBB', body)
    elif kind == b'IDAT':
        idat += body
    pos += 12 + n
assert depth == 8 and interlace == 0 and ctype in (0, 2, 4, 6), (depth, ctype, interlace)
bpp = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
raw = zlib.decompress(idat)
stride = w * bpp
prev = bytearray(stride)
colours = set()
i = 0
for _ in range(h):
    f = raw[i]; line = bytearray(raw[i + 1:i + 1 + stride]); i += 1 + stride
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0
        b = prev[x]
        c = prev[x - bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(0, stride, bpp):
        colours.add(bytes(line[x:x + bpp]))
    prev = line
print(len(colours))
"#;
    require_tools(&["python3"]);
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(DECODE).arg(path);
    let out = run_cmd(cmd, CMD_TIMEOUT).ok();
    let distinct_colours = out
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("decoder printed {:?}: {e}", out.stdout));
    PngFacts {
        width,
        height,
        bit_depth,
        color_type,
        distinct_colours,
    }
}

/// Distinct byte values in a file.
pub fn distinct_bytes(path: &Path) -> usize {
    let bytes = std::fs::read(path).expect("read file");
    let mut seen = [false; 256];
    for b in bytes {
        seen[b as usize] = true;
    }
    seen.iter().filter(|s| **s).count()
}
