"""Question extraction on prompts shaped like the published benchmark prompts."""

from __future__ import annotations

import pytest

from crossroads.data.prompts import extract_question, split_prompt

CHOICE = 'Print only a single choice  from "A" or "B" or "C" or "D" without explanation.'

# RouterBench arc-challenge: five answered examples, then the question, all in one prompt.
ARC_5_SHOT = (
    f"George wants to warm his hands quickly by rubbing them. Which skin surface will produce the most heat?\n"
    f"A) dry palms\nB) wet palms\nC) palms covered with oil\nD) palms covered with lotion\n{CHOICE}\nAnswer:\nA\n\n"
    f"Which of the following statements best explains why magnets usually stick to a refrigerator door?\n"
    f"A) The refrigerator door is smooth.\nB) The refrigerator door contains iron.\n"
    f"C) The refrigerator door is a good conductor.\nD) The refrigerator door has electric wires in it.\n{CHOICE}\nAnswer:\nB\n\n"
    f"A fold observed in layers of sedimentary rock most likely resulted from the\nA) cooling of flowing magma.\n"
    f"B) converging of crustal plates.\nC) deposition of river sediments.\nD) solution of carbonate minerals.\n{CHOICE}\nAnswer:\nB\n\n"
    f"An animal has six legs. What is it most likely to be?\nA) a centipede\nB) a lizard\nC) a spider\nD) a fly\n{CHOICE}\nAnswer:"
)

# RouterBench winogrande: each example carries an instruction block; the question does not.
WINOGRANDE_5_SHOT = (
    "Please answer with the letter of the correct answer.\n\n"
    "Ian volunteered to eat Dennis's menudo after already having a bowl because _ despised eating intestine.\n"
    'A) Ian\nB) Dennis\nPrint only a single choice  from "A" or "B" without explanation. Answer:\nB\n\n'
    "Please answer with the letter of the correct answer.\n\n"
    "He never comes to my home, but I always go to his house because the _ is smaller.\n"
    'A) home\nB) house\nPrint only a single choice  from "A" or "B" without explanation. Answer:\nA\n\n'
    "The drink was rich in caffeine and low in sugar because the _ was not enough to keep the drinker awake.\n"
    'A) caffeine\nB) sugar\nPrint only a single choice  from "A" or "B" without explanation. Answer:'
)

# RouteLLM / sglang MMLU: a header, dev examples with answers, then the question.
MMLU_5_SHOT = (
    "The following are multiple choice questions (with answers) about  anatomy.\n\n"
    "What is the embryological origin of the hyoid bone?\nA. The first pharyngeal arch\nB. The first and second "
    "pharyngeal arches\nC. The second pharyngeal arch\nD. The second and third pharyngeal arches\nAnswer: D\n\n"
    "Which of these branches of the trigeminal nerve contain somatic motor processes?\nA. The supraorbital nerve\n"
    "B. The infraorbital nerve\nC. The mental nerve\nD. None of the above\nAnswer: D\n\n"
    "Which of the following structures is derived from ectomesenchyme?\nA. Motor neurons\nB. Skeletal muscles\n"
    "C. Melanocytes\nD. Sweat glands\nAnswer:"
)

# RouteLLM / sglang GSM8K: eight worked examples with multi-line answers, then the question.
GSM8K_FEW_SHOT = (
    "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?\n"
    "Answer: Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72\n\n"
    "Question: Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
    "How much did she earn?\n"
    "Answer: Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
    "$<<0.2*50=10>>10.\n#### 10\n\n"
    "Question: Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast every morning. "
    "How much in dollars does she make every day at the farmers' market?\nAnswer:"
)

# MMLU-Pro: chain-of-thought examples whose answers span several lines.
MMLU_PRO_COT = (
    "The following are multiple choice questions (with answers) about business. Think step by step and then "
    'finish your answer with "the answer is (X)" where X is the correct letter choice.\n\n'
    "Question:\nIn contrast to _______, _______ aim to reward favourable behaviour by companies.\n"
    "Options:\nA. Boycotts, Buyalls\nB. Buycotts, Boycotts\n"
    "Answer: Let's think step by step. We refer to Wikipedia articles on business ethics for help.\n"
    "The answer is (B).\n\n"
    "Question:\nWhat is the characteristic of the ring 2Z?\nOptions:\nA. 0\nB. 2\nAnswer: Let's think step by step."
)


@pytest.mark.parametrize(
    "prompt, question",
    [
        (ARC_5_SHOT, "An animal has six legs. What is it most likely to be?\nA) a centipede\nB) a lizard\nC) a spider\nD) a fly"),
        (
            WINOGRANDE_5_SHOT,
            "The drink was rich in caffeine and low in sugar because the _ was not enough to keep the drinker "
            "awake.\nA) caffeine\nB) sugar",
        ),
        (
            MMLU_5_SHOT,
            "Which of the following structures is derived from ectomesenchyme?\nA. Motor neurons\nB. Skeletal muscles\n"
            "C. Melanocytes\nD. Sweat glands",
        ),
        (
            GSM8K_FEW_SHOT,
            "Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast every morning. "
            "How much in dollars does she make every day at the farmers' market?",
        ),
    ],
    ids=["routerbench-arc", "routerbench-winogrande", "mmlu-5-shot", "gsm8k-8-shot"],
)
def test_few_shot_prompts_give_the_last_question(prompt, question):
    assert extract_question(prompt) == question


def test_chain_of_thought_examples_are_dropped():
    question = extract_question(MMLU_PRO_COT + "\n\n")
    assert "Buycotts" not in question and question.startswith("What is the characteristic of the ring 2Z?")


@pytest.mark.parametrize(
    "prompt, question",
    [
        # RouterDC arc: a label and an answer cue around the question
        ("Question:What role do plants have in the carbon cycle?\nAnswer:", "What role do plants have in the carbon cycle?"),
        # RouterDC cmmlu: a Chinese answer cue
        ("运行中变压器温度最高的部分是\nA. 绕组\nB. 变压器油\nC. 引线\nD. 铁芯\n答案：", "运行中变压器温度最高的部分是\nA. 绕组\nB. 变压器油\nC. 引线\nD. 铁芯"),
        # LLMRouter logic puzzles start with a "Q:" label
        ("Q: There are 2 houses next to each other.\n\nClue(s):\n1. The red house is first.\n\nWhich house is blue?",
         "There are 2 houses next to each other.\n\nClue(s):\n1. The red house is first.\n\nWhich house is blue?"),
        # Q:/A: examples without blank lines between them
        ("Q: What is 1 + 1?\nA: 2\nQ: What is 2 + 2?\nA:", "What is 2 + 2?"),
        ("Question: What is 1 + 1?\nAnswer: 2\nQuestion: What is 2 + 2?\nAnswer:", "What is 2 + 2?"),
    ],
)
def test_labels_and_answer_cues_are_removed(prompt, question):
    assert extract_question(prompt) == question


@pytest.mark.parametrize(
    "prompt",
    [
        "Write a function to remove all elements from a given list present in another list.",
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?",
        'def generate_integers(a, b):\n    """\n    Given two positive integers a and b, return the even digits.\n\n'
        '    For example:\n    generate_integers(2, 8) => [2, 4, 6, 8]\n    """',
        # "answer:" inside a sentence is not a cue: nothing is cut
        "Which is the correct answer: 42 or 43?\n\nExplain your reasoning.",
        # a passage with blank lines and no examples stays whole
        "When Boris left school, he could not find a job.\n\nHe went to London.\n\nWhy did Boris go to London?",
    ],
)
def test_bare_questions_are_kept(prompt):
    assert extract_question(prompt) == prompt


def test_split_prompt_keeps_the_original_only_when_it_differs():
    assert split_prompt("What is 2 + 2?") == ("What is 2 + 2?", None)
    question, full = split_prompt(ARC_5_SHOT)
    assert full == ARC_5_SHOT and question.startswith("An animal has six legs")


def test_nothing_but_a_cue_keeps_the_text():
    assert extract_question("Answer:") == "Answer:"
    assert extract_question("   ") == ""
