"""German Multi30k as a logographic script: every word becomes one CJK Unified Ideograph (a fixed
FNV-1a hash of the lowercased word into U+4E00..U+9FFF), spaces removed. Writes
OUT/{train,val,test_2016_flickr}.tsv (`X<TAB>English`) for `otkd train --bitext`.

usage: python3 scripts/logographic-proxy.py [MULTI30K_DIR [OUT_DIR]]"""
import gzip, os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/multi30k"
out_dir = sys.argv[2] if len(sys.argv) > 2 else "logographic-de"
os.makedirs(out_dir, exist_ok=True)
def char(word):
    h = 0xcbf29ce484222325
    for b in word.lower().encode():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return chr(0x4E00 + h % (0x9FFF - 0x4E00 + 1))
def logographic(text):
    return "".join(char(w) for w in re.findall(r"\w+", text))
for split in ["train", "val", "test_2016_flickr"]:
    de = gzip.open(f"{root}/task1/{split}.de.gz", "rt", encoding="utf-8").read().split("\n")
    en = gzip.open(f"{root}/task1/{split}.en.gz", "rt", encoding="utf-8").read().split("\n")
    with open(f"{out_dir}/{split}.tsv", "w", encoding="utf-8") as out:
        for d, e in zip(de, en):
            if d.strip() and e.strip():
                out.write(f"{logographic(d)}\t{e.strip()}\n")
