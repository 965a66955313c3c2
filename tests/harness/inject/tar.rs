//! A tiny tar reader, to check what `acr layer pack` wrote without depending on `tar`'s locale and time zone.

// ------------------------------------------------------------------------------------------
// tar

/// One entry of a tar archive (after PAX/GNU long-name records were applied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarEntry {
    pub name: String,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// `b'0'` (or 0) regular file, `b'2'` symlink, `b'5'` directory, ...
    pub typeflag: u8,
    pub size: u64,
    pub linkname: String,
    pub data: Vec<u8>,
}

impl TarEntry {
    pub fn is_file(&self) -> bool {
        self.typeflag == b'0' || self.typeflag == 0
    }
    pub fn is_symlink(&self) -> bool {
        self.typeflag == b'2'
    }
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn octal(field: &[u8]) -> u64 {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // base-256
        return field[1..]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    }
    let s = cstr(field);
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    if s.is_empty() {
        0
    } else {
        u64::from_str_radix(s, 8).unwrap_or_else(|e| panic!("bad octal {s:?} in tar: {e}"))
    }
}

fn pax_records(data: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest.iter().position(|b| *b == b' ').expect("pax length");
        let len: usize = String::from_utf8_lossy(&rest[..sp])
            .parse()
            .expect("pax len");
        let rec = &rest[sp + 1..len];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(eq) = rec.iter().position(|b| *b == b'=') {
            out.push((
                String::from_utf8_lossy(&rec[..eq]).into_owned(),
                String::from_utf8_lossy(&rec[eq + 1..]).into_owned(),
            ));
        }
        rest = &rest[len..];
    }
    out
}

/// Parses a (ustar, PAX or GNU) tar archive.
pub fn read_tar(tar: &[u8]) -> Vec<TarEntry> {
    let mut entries = Vec::new();
    let mut pos = 0;
    let mut long_name: Option<String> = None;
    let mut long_link: Option<String> = None;
    let mut pax: Vec<(String, String)> = Vec::new();
    while pos + 512 <= tar.len() {
        let h = &tar[pos..pos + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let size = octal(&h[124..136]);
        let typeflag = h[156];
        let data_start = pos + 512;
        let data_end = data_start + size as usize;
        assert!(data_end <= tar.len(), "tar entry runs past the end");
        let data = tar[data_start..data_end].to_vec();
        pos = data_start + (size as usize).div_ceil(512) * 512;
        match typeflag {
            b'x' => {
                pax = pax_records(&data);
                continue;
            }
            b'g' => continue,
            b'L' => {
                long_name = Some(cstr(&data));
                continue;
            }
            b'K' => {
                long_link = Some(cstr(&data));
                continue;
            }
            _ => {}
        }
        let mut name = cstr(&h[0..100]);
        if &h[257..262] == b"ustar" {
            let prefix = cstr(&h[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let mut linkname = cstr(&h[157..257]);
        let mut uid = octal(&h[108..116]);
        let mut gid = octal(&h[116..124]);
        let mut mtime = octal(&h[136..148]);
        if let Some(n) = long_name.take() {
            name = n;
        }
        if let Some(l) = long_link.take() {
            linkname = l;
        }
        for (k, v) in pax.drain(..) {
            match k.as_str() {
                "path" => name = v,
                "linkpath" => linkname = v,
                "uid" => uid = v.parse().unwrap_or(uid),
                "gid" => gid = v.parse().unwrap_or(gid),
                "mtime" => {
                    mtime = v
                        .split('.')
                        .next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(mtime)
                }
                _ => {}
            }
        }
        entries.push(TarEntry {
            name,
            mode: octal(&h[100..108]) as u32,
            uid,
            gid,
            mtime,
            typeflag,
            size,
            linkname,
            data,
        });
    }
    entries
}

/// A tar entry name without a leading `./`.
pub fn clean_name(name: &str) -> &str {
    name.strip_prefix("./").unwrap_or(name)
}
