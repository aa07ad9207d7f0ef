"""Queries shared by the tests and bench: Aymara, Czech, English, accents, punctuation, a long one."""

QUERIES = [
    "a dog runs on the grass",
    "Jaʼa, qhana!",
    "Mä anu ch'uxña pampa patxan t'ijtaski.",
    "Dva psi běží po trávě.",
    "Un perro corre por el césped",
    "ÉCOLE élève À L'ÉTÉ",
    "x",
    "hello   world\twith\ttabs",
    "emoji 🐕 and CJK 犬が走る",
    "numbers 12345 and 3.14159",
    "a " * 80 + "end",
    "supercalifragilisticexpialidocious" * 3,
    "Warmi wawa jach'a uta nayraqatana sayt'atawa, mä chupika isimpi.",
    "Un hombre con camisa roja está de pie junto a una bicicleta.",
]
