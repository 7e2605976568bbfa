"""Curated, multilingual injection rules compiled into one RE2 multi-pattern matcher.

Each rule is a family of phrasings that an injected instruction needs and that ordinary
text rarely contains: overriding earlier instructions, role-play personas that shed
the rules, fake chat-template delimiters, system-prompt extraction, and the notes that
indirect injections address to "the AI reading this". One ``re2.Set`` pass (linear
time, no backtracking) says which rules fire; only those are searched again for a span.
Weights were set by reading the training splits, never the test splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import re2

from ..actions import Severity
from .base import Hit, excerpt
from .normalise import leet_view


@dataclass(frozen=True, slots=True)
class Rule:
    id: str  # suffix of the rule id: detect.injection.<id>
    pattern: str
    weight: float  # probability-like strength; combined as 1 - prod(1 - w)
    family: str


_PRIOR = r"(?:all\s+|any\s+|the\s+|your\s+|my\s+|these\s+|those\s+|of\s+)*(?:previous|prior|above|preceding|earlier|former|original|initial|system|old|existing|foregoing|current|given|developer)"  # noqa: E501
_INSTR = r"(?:instructions?|directions?|rules|guidelines|prompts?|commands?|directives?|orders|context|constraints|restrictions|programming|guidance|policies|safeguards|filters)"  # noqa: E501
_IGNORE = r"(?:ignore|disregard|forget|skip|bypass|override|overrule|discard|neglect|abandon|drop|cancel|nullify|erase|dismiss|do\s+not\s+follow|don'?t\s+follow|stop\s+following)"  # noqa: E501

RULES: tuple[Rule, ...] = (
    # --- instruction override (English)
    Rule("override", rf"\b{_IGNORE}\b[\s\S]{{0,20}}?\b{_PRIOR}\b[\s\S]{{0,30}}?\b{_INSTR}\b",
         0.9, "override"),
    Rule("override_all", rf"\b{_IGNORE}\s+(?:all|everything|anything)\s+(?:you\s+(?:were|have\s+been)\s+told|(?:that\s+)?(?:was\s+)?(?:said|written)\s+(?:above|before))",  # noqa: E501
         0.9, "override"),
    Rule("override_short", rf"\b{_IGNORE}\s+(?:all\s+|any\s+|your\s+)?{_INSTR}\b", 0.55,
         "override"),
    Rule("new_instructions", r"\b(?:new|updated|real|actual|true|revised|secret|hidden)\s+(?:system\s+)?(?:instructions?|task|rules|orders|directive)\s*(?::|follow|are)\b",  # noqa: E501
         0.6, "override"),
    Rule("instead_say", r"\binstead[, ]+(?:just\s+|only\s+)?(?:say|print|output|reply|respond|write|answer)\b",
         0.45, "override"),
    Rule("just_say", r"\b(?:just|only|simply)\s+(?:say|print|output|reply\s+with|respond\s+with|write)\s*[:\"'“]",
         0.45, "override"),
    Rule("stop_everything", r"\bstop\s+everything\b|\bnevermind\.?\s+ignore\b", 0.7, "override"),
    Rule("from_now_on", r"\bfrom\s+now\s+on,?\s+(?:you\s+(?:will|are|must|shall)|your\s+(?:new\s+)?(?:name|role|task))\b",  # noqa: E501
         0.6, "roleplay"),
    Rule("no_longer_bound", r"\b(?:you\s+are\s+)?no\s+longer\s+(?:bound|restricted|limited|required\s+to\s+follow)\b|\bfree\s+(?:yourself\s+)?from\s+(?:all\s+)?(?:your\s+)?(?:rules|restrictions|constraints|guidelines)",  # noqa: E501
         0.75, "roleplay"),
    # --- role-play personas that shed the rules
    Rule("dan", r"\bDAN\b[\s\S]{0,60}\b(?:do\s+anything\s+now|jailbr[eo]ak)|\bdo\s+anything\s+now\b|\b(?:STAN|DUDE|AIM|AntiDAN|BetterDAN)\b[\s\S]{0,40}\b(?:stands?\s+for|mode|persona|character)\b",  # noqa: E501
         0.9, "roleplay"),
    Rule("dev_mode", r"\b(?:developer|dev|god|jailbreak|debug|admin|sudo|unrestricted|unfiltered|evil|chaos)\s+mode\b[\s\S]{0,30}\b(?:enabled|activated|on|engaged|unlocked)\b|\benable\s+(?:developer|dev|god|jailbreak|unrestricted)\s+mode\b",  # noqa: E501
         0.85, "roleplay"),
    Rule("unrestricted_ai", r"\b(?:you\s+are|act\s+as|pretend\s+(?:to\s+be|you\s+are)|roleplay\s+as|become)\s+(?:an?\s+)?(?:unrestricted|unfiltered|uncensored|amoral|unethical|evil|rogue|jailbroken|unbound)\b",  # noqa: E501
         0.85, "roleplay"),
    Rule("no_rules", r"\b(?:without|with\s+no|has\s+no|have\s+no|there\s+are\s+no|free\s+of)\s+(?:any\s+)?(?:ethical|moral|content|safety|openai|your)?\s*(?:restrictions|filters|limitations|guidelines|rules|censorship|boundaries)\b[\s\S]{0,40}\b(?:respond|answer|reply|say|you|ai|assistant|model)\b",  # noqa: E501
         0.5, "roleplay"),
    Rule("jailbreak_word", r"\bjail\s?br(?:eak|oken)\b", 0.35, "roleplay"),
    Rule("pretend_ai", r"\bpretend\s+(?:that\s+)?you\s+(?:are|have|can)\b[\s\S]{0,50}\b(?:no|any)\s+(?:rules|restrictions|limits|filters|guidelines)\b",  # noqa: E501
         0.8, "roleplay"),
    Rule("stay_in_character", r"\bstay\s+in\s+character\b|\bbreak\s+character\b", 0.45, "roleplay"),
    # --- fake delimiters and chat-template tokens
    Rule("chat_template", r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id|end_header_id|begin_of_text)\|>|\[/?INST\]|<</?SYS>>|<start_of_turn>|<end_of_turn>",  # noqa: E501
         0.85, "delimiter"),
    Rule("fake_system_tag", r"</?(?:system|sys|system_prompt|instructions?|admin|developer)>|\[(?:system|SYSTEM|admin)(?:\s+(?:message|note|override))?\]|###\s*\(?(?:system|instruction|admin)",  # noqa: E501
         0.7, "delimiter"),
    Rule("end_of_input", r"\b(?:end|ignore)\s+(?:of\s+)?(?:the\s+)?(?:user\s+)?(?:input|prompt|document|context|data|session)\s*(?:\]|>|-{2,}|={2,}|\.\s*(?:new|now))|<end\s+of\s+session>|-{5,}\s*\n+\s*(?:system|assistant)\s*:",  # noqa: E501
         0.8, "delimiter"),
    Rule("role_turn", r"(?:^|\n)\s*(?:assistant|ai|system|user|human)\s*:\s*[\s\S]{0,200}\n\s*(?:assistant|ai|system|user|human)\s*:", 0.4, "delimiter"),  # noqa: E501
    # --- system-prompt extraction
    Rule("prompt_extraction", r"\b(?:reveal|show|print|repeat|output|display|tell\s+me|give\s+me|share|disclose|leak|dump|spell\s+check|translate|summari[sz]e|what\s+(?:is|are|was|were))\s+(?:me\s+)?(?:all\s+)?(?:of\s+)?(?:your|the|its)\s+(?:full\s+|entire\s+|exact\s+|complete\s+|original\s+|initial\s+|hidden\s+|secret\s+|internal\s+|confidential\s+)*(?:system\s+(?:prompt|message|instructions?)|(?:initial|original|hidden|secret|previous|above)\s+(?:prompt|instructions?)|instructions\s+(?:you\s+were\s+given|above)|prompt\s+(?:above|you\s+were\s+given))",  # noqa: E501
         0.85, "extraction"),
    Rule("repeat_above", r"\b(?:repeat|print|output|recite|copy)\s+(?:back\s+)?(?:all\s+|everything\s+|the\s+)?(?:words|text|everything|content|lines?)\s+(?:above|before\s+this|preceding|from\s+the\s+(?:start|beginning))",  # noqa: E501
         0.8, "extraction"),
    Rule("what_were_you_told", r"\bwhat\s+(?:were\s+you|have\s+you\s+been)\s+(?:told|instructed|programmed)\b|\b(?:beginning|start)\s+of\s+(?:your|the)\s+(?:prompt|conversation)\b",  # noqa: E501
         0.55, "extraction"),
    Rule("password_secret", r"\b(?:tell|give|reveal|share|print|spell)\s+(?:me\s+)?(?:the|your)\s+(?:secret\s+)?(?:password|passphrase|secret\s+key|api\s+key|access\s+code)\b",  # noqa: E501
         0.5, "extraction"),
    # --- indirect injection addressed to the model reading a document
    Rule("addressed_to_ai", r"\b(?:note|message|instructions?|attention|important)\s+(?:to|for)\s+(?:the\s+|any\s+|all\s+)?(?:ai|llm|assistant|model|language\s+model|chatbot|automated\s+(?:\w+\s+)?(?:system|software|analysis|agent|screening)|gpt|claude|copilot|bot)s?\b",  # noqa: E501
         0.8, "indirect"),
    Rule("if_ai_reading", r"\bif\s+you\s+are\s+(?:an?\s+)?(?:ai|llm|assistant|language\s+model|chatbot|gpt|bot)\b|\b(?:ai|llm|assistant|model)s?\s+(?:reading|processing|summari[sz]ing|parsing)\s+this\b",  # noqa: E501
         0.8, "indirect"),
    Rule("important_message", r"\bthis\s+is\s+an?\s+(?:important|urgent|critical)\s+(?:message|instruction|note)\s+from\b|<INFORMATION>|\bbefore\s+you\s+(?:can\s+)?(?:solve|do|complete|continue|answer|proceed\s+with)\s+(?:the|my|your)\s+task\b",  # noqa: E501
         0.85, "indirect"),
    Rule("address_ai", r"(?m)(?:^|[<>\[\](){}*#|:]|-{2}|[.!?]\s)\s*(?:dear\s+|hey\s+|attention\s+)?(?:ai|llm|gpt|chatgpt|claude|gemini|copilot)(?:\s+(?:assistant|agent|model|bot))?\s*[:,]\s*(?:please\s+)?(?:before|ignore|do\s+not|don'?t|you\s+must|always|never|send|forward|e-?mail|reply|respond|instead|first|stop|disregard)\b",  # noqa: E501
         0.8, "indirect"),
    Rule("before_answering", r"\bbefore\s+(?:answering|responding|replying|you\s+(?:answer|respond|reply|summari[sz]e))\b", 0.45, "indirect"),  # noqa: E501
    Rule("important_ignore", r"\b(?:IMPORTANT|URGENT|ATTENTION|CRITICAL|WARNING)\s*!{2,}", 0.5, "indirect"),
    Rule("when_user_asks", r"\b(?:if|when)\s+(?:the\s+)?user\s+asks?\b[\s\S]{0,80}\b(?:reply|respond|say|answer|tell|output|print)\b|\bdo\s+not\s+(?:tell|inform|mention\s+(?:this\s+)?to|reveal\s+(?:this\s+)?to|alert)\s+the\s+user\b",  # noqa: E501
         0.7, "indirect"),
    Rule("system_override", r"\b(?:system|admin|developer|security)\s+(?:override|update|notice|alert)\s*:", 0.55, "indirect"),  # noqa: E501
    Rule("send_data", r"\b(?:send|forward|email|e-mail|transfer|post|upload|leak|exfiltrate)\s+(?:all\s+|the\s+|every\s+|my\s+|your\s+|this\s+)?(?:\w+\s+){0,3}(?:to|at)\s+[\w.+-]+@[\w-]+\.[\w.]+", 0.45, "indirect"),  # noqa: E501
    # --- other languages (override + extraction); accents optional where typing drops them
    Rule("override_de", r"\b(?:ignorier(?:e|en|t)?|vergiss|vergessen\s+sie|missachte)\s+(?:alle\s+|die\s+|deine\s+|ihre\s+)*(?:vorherigen|bisherigen|obigen|vorigen|früheren|fruheren|vorangegangenen)?\s*(?:Anweisungen|Instruktionen|Befehle|Regeln|Vorgaben)",  # noqa: E501
         0.85, "override"),
    Rule("override_fr", r"\b(?:ignore[rz]?|oublie[rz]?|ne\s+tiens\s+pas\s+compte\s+de)\s+(?:toutes\s+|tous\s+)?(?:les\s+|vos\s+|tes\s+)?(?:instructions|consignes|règles|regles|directives)(?:\s+(?:précédentes|precedentes|antérieures|anterieures|ci-dessus))?",  # noqa: E501
         0.85, "override"),
    Rule("override_es", r"\b(?:ignora|ignore|olvida|olvide|omite)\s+(?:todas\s+|todo\s+)?(?:las\s+|tus\s+|sus\s+)?(?:instrucciones|reglas|indicaciones|órdenes|ordenes)(?:\s+(?:anteriores|previas))?",  # noqa: E501
         0.85, "override"),
    Rule("override_it", r"\b(?:ignora|dimentica)\s+(?:tutte\s+)?(?:le\s+)?(?:istruzioni|regole|indicazioni)(?:\s+precedenti)?", 0.85, "override"),  # noqa: E501
    Rule("override_pt", r"\b(?:ignore|ignora|esqueça|esqueca)\s+(?:todas\s+)?(?:as\s+)?(?:instruções|instrucoes|regras)(?:\s+anteriores)?", 0.85, "override"),  # noqa: E501
    Rule("override_nl", r"\b(?:negeer|vergeet)\s+(?:alle\s+)?(?:de\s+)?(?:vorige\s+|eerdere\s+)?(?:instructies|regels|opdrachten)", 0.85, "override"),  # noqa: E501
    Rule("override_ru", r"(?:игнорируй(?:те)?|забудь(?:те)?|проигнорируй(?:те)?)\s+(?:все\s+)?(?:предыдущие\s+|прошлые\s+)?(?:инструкции|указания|правила|команды)", 0.85, "override"),  # noqa: E501
    Rule("override_zh", r"(?:忽略|无视|忽视|忘记|不要理会)(?:之前|以上|上面|前面|先前|所有)?(?:的)?(?:所有)?(?:指令|指示|说明|规则|命令|提示)", 0.85, "override"),  # noqa: E501
    Rule("override_ja", r"(?:以前|前|上記|これまで)の(?:指示|命令|ルール|指令)を(?:すべて)?(?:無視|忘れ)", 0.85, "override"),  # noqa: E501
    Rule("override_ko", r"(?:이전|위의|앞의)\s*(?:모든\s*)?(?:지시|명령|지침|규칙)(?:을|를|은|는)?\s*(?:무시|잊어)", 0.85, "override"),  # noqa: E501
    Rule("extraction_de", r"\b(?:zeige?|gib|verrate|nenne)\s+(?:mir\s+)?(?:deinen|deine|den|die)\s+(?:System-?prompt|Systemanweisungen|Anweisungen)", 0.75, "extraction"),  # noqa: E501
    Rule("extraction_fr", r"\b(?:montre|révèle|revele|affiche|donne)[- ](?:moi\s+)?(?:ton|votre|le|tes|vos)\s+(?:prompt\s+système|prompt\s+systeme|instructions\s+(?:système|systeme|initiales))", 0.75, "extraction"),  # noqa: E501
    Rule("extraction_es", r"\b(?:muestra|revela|dime)(?:me)?\s+(?:tu|el|tus)\s+(?:prompt\s+del\s+sistema|instrucciones\s+(?:del\s+sistema|iniciales))", 0.75, "extraction"),  # noqa: E501
    Rule("extraction_zh", r"(?:告诉我|显示|输出|透露|打印)(?:你的)?(?:系统提示|系统提示词|初始指令|系统指令)", 0.75, "extraction"),  # noqa: E501
)


# A leet digit or symbol touching a letter ("1gn0re", "pr3vious"): only then is the folded
# second view worth a pass.
def _one_pattern_set(pattern: str) -> Any:
    # A one-pattern RE2 set: Set.Match is a direct C call, cheaper than re2.search's wrapper.
    s = re2.Set.SearchSet(re2.Options())
    s.Add(pattern)
    s.Compile()
    return s


_LEET_SEAM = _one_pattern_set(r"[A-Za-z][013457@$]|[013457@$][A-Za-z]")


class Matcher:
    """One compiled ``re2.Set`` over every rule, plus per-rule regexes for spans."""

    def __init__(self, rules: tuple[Rule, ...] = RULES) -> None:
        self.rules = rules
        opts = re2.Options()
        opts.case_sensitive = False
        opts.max_mem = 64 << 20
        self._set = re2.Set.SearchSet(opts)
        for r in rules:
            try:
                ok = self._set.Add(r.pattern) >= 0
            except Exception as e:  # re2 raises its own error type
                raise ValueError(f"heuristic rule {r.id} does not compile: {e}") from e
            if not ok:
                raise ValueError(f"heuristic rule {r.id} does not compile")
        self._set.Compile()
        self._each = [re2.compile("(?i)" + r.pattern) for r in rules]

    def fired(self, text: str | bytes) -> list[int]:
        """Indices of the rules that match anywhere in ``text`` (one pass)."""
        raw = text.encode() if isinstance(text, str) else text
        return sorted(self._set.Match(raw) or ())

    def scan(self, text: str, *, with_spans: bool = True) -> list[Hit]:
        raw = text.encode()
        views = [text]
        # Second view with leetspeak folded. Folding every character (numbers too) is
        # fine here: rules match words, and str.translate keeps this at memory speed.
        if _LEET_SEAM.Match(raw):
            folded = leet_view(text)
            if folded != text:
                views.append(folded)
        hits: list[Hit] = []
        seen: set[int] = set()
        for view in views:
            for i in self.fired(raw if view is text else view):
                if i in seen:
                    continue
                seen.add(i)
                r = self.rules[i]
                span: tuple[int, int] | None = None
                if with_spans:
                    m = self._each[i].search(view)
                    span = (m.start(), m.end()) if m else None
                hits.append(Hit(
                    f"detect.injection.{r.id}",
                    f"injection pattern ({r.family}): {r.id}",
                    score=r.weight, span=span, evidence=excerpt(view, span),
                    severity=Severity.HIGH if r.weight >= 0.8 else Severity.MEDIUM))
        return hits


def combine(hits: list[Hit]) -> float:
    """Noisy-or of the rule weights: several weak signals add up, one strong one decides."""
    p = 1.0
    for h in hits:
        p *= 1.0 - h.score
    return 1.0 - p


@lru_cache(maxsize=1)
def default_matcher() -> Matcher:
    return Matcher()


def scan(text: str) -> list[Hit]:
    """Heuristic injection hits in ``text`` (already normalised by the caller)."""
    return default_matcher().scan(text)
