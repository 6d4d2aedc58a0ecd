"""The default job of `realm-hf pretrain`: a generated world of invented facts (`synthetic`) on which REALM
pre-training learns to retrieve from the masked-LM signal alone (`job`), and `realm-hf finetune`, which fine-tunes
open-domain QA on that world's questions from the pre-trained model (`openqa`).
"""
