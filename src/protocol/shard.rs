//! Key → server routing, identical across the Go, TypeScript, Python and
//! this client so a mixed fleet agrees on which server owns a key.

/// zlib's CRC-32 (IEEE, reflected 0xEDB88320, init/xorout 0xFFFFFFFF),
/// a byte at a time from a 1 KiB table built at compile time. Keys are
/// short, so this is as fast as it needs to be, and it keeps the shipped
/// library within its size budget (crc32fast's slice-by-16 table and SIMD
/// paths cost 22 KB there).
pub fn crc32_ieee(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &b| {
        (crc >> 8) ^ CRC_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize]
    })
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// `crc32_ieee(utf8(key)) % servers`. `servers` must be at least 1.
pub fn crc32_shard(key: &str, servers: usize) -> usize {
    assert!(servers > 0, "crc32_shard needs at least one server");
    (crc32_ieee(key.as_bytes()) as u64 % servers as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_from_protocol_md() {
        assert_eq!(crc32_ieee(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32_ieee("my-key".as_bytes()), 0xD6E3_3AC1);
        assert_eq!(crc32_shard("my-key", 3), 2);
        assert_eq!(crc32_ieee("deploy".as_bytes()), 0x923B_38FA);
        assert_eq!(crc32_shard("deploy", 3), 1);
        assert_eq!(crc32_ieee("é-clé".as_bytes()), 0x4058_0493);
        assert_eq!(crc32_shard("é-clé", 3), 0);
        assert_eq!(crc32_shard("é-clé", 5), 3);
        assert_eq!(crc32_shard("anything", 1), 0);
    }
}
