"""Identification by structure (ONNX, SavedModel/GraphDef, safetensors, GGUF, YAML, Jinja, Hugging Face JSON)
and the static checks of the formats added for it. Every file is built here by hand: no network, no TensorFlow,
no torch; nothing is loaded, rendered or constructed."""

import json
import struct

import pytest

from tests.hostile_files import varint  # the protobuf writer the corpus uses
from worker.findings import Severity
from worker.inspect.checks import structure_check
from worker.inspect.formats import MODEL_KINDS, extension_matches, kind_from_name, sniff, sniff_bytes
from worker.inspect.gguf import check_gguf
from worker.inspect.jinja import check_hf_json, check_jinja_file, check_jinja_template
from worker.inspect.protobuf import LEN, VARINT, ProtobufError, Truncated, iter_fields, read_varint
from worker.inspect.safetensors import check_safetensors
from worker.inspect.savedmodel import check_savedmodel, parse_tf_graph, tf_graph_problems
from worker.inspect.yaml_tags import check_yaml

HASH_NAME = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"  # how the artifact store names files


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p


def severities(findings):
    return {f.severity for f in findings}


def titles(findings, severity=None):
    return [f.title for f in findings if severity is None or f.severity == severity]


def worst(findings):
    return max((f.severity for f in findings), key=lambda s: s.rank)


# --------------------------------------------------------------------------------------------
# Protobuf fields for the fixtures
# --------------------------------------------------------------------------------------------

def pb(number: int, value) -> bytes:
    if isinstance(value, int):
        return varint(number << 3 | VARINT) + varint(value)
    value = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | LEN) + varint(len(value)) + value


def node_def(name, op, *inputs):
    return pb(1, name) + pb(2, op) + b"".join(pb(3, i) for i in inputs)


def function_def(name, *nodes):
    return pb(1, pb(1, name)) + b"".join(pb(3, n) for n in nodes)


def graph_def(nodes, functions=()):
    library = pb(2, b"".join(pb(1, f) for f in functions)) if functions else b""
    return b"".join(pb(1, n) for n in nodes) + library + pb(4, pb(1, 27))  # versions.producer


def saved_model(graph: bytes) -> bytes:
    meta_info = pb(1, pb(4, "serve") + pb(5, "2.19.0"))
    return pb(1, 1) + pb(2, meta_info + pb(2, graph))


CLEAN_GRAPH = graph_def([node_def("x", "Placeholder"), node_def("w", "Const"), node_def("y", "MatMul", "x", "w"),
                         node_def("saver/restore", "RestoreV2"), node_def("ReadFile", "Identity", "y")],
                        [function_def("__inference_call_12", node_def("a", "Mul"), node_def("b", "ReadFileV9"))])


# --------------------------------------------------------------------------------------------
# protobuf.py
# --------------------------------------------------------------------------------------------

def test_protobuf_reads_every_wire_type():
    data = pb(1, 150) + pb(2, "hi") + varint(3 << 3 | 5) + struct.pack("<I", 7) + varint(4 << 3 | 1) + struct.pack("<Q", 9)
    fields = list(iter_fields(data))
    assert [(f.number, f.wire_type) for f in fields] == [(1, 0), (2, 2), (3, 5), (4, 1)]
    assert fields[0].value == 150 and bytes(fields[1].value) == b"hi" and fields[2].value == 7 and fields[3].value == 9
    assert read_varint(varint(2**63), 0, 10) == (2**63, 10)


@pytest.mark.parametrize("data", [
    b"\xff" * 11,                   # varint longer than 10 bytes
    pb(1, "abc")[:-1],              # length runs past the end
    b"\x00\x01",                    # field number 0
    varint(1 << 3 | 3) + b"\x00",   # group (deprecated)
    varint(1 << 3 | 7) + b"\x00",   # no such wire type
    varint(1 << 3 | 5) + b"\x01",   # fixed32 cut short
])
def test_protobuf_rejects_malformed(data):
    with pytest.raises(ProtobufError):
        list(iter_fields(data))


def test_protobuf_prefix_of_a_longer_message():
    message = pb(1, 5) + pb(2, "x" * 100) + pb(3, 7)
    fields = list(iter_fields(message[:20], total=len(message)))  # a file's head
    assert [f.number for f in fields] == [1, 2] and fields[1].truncated
    with pytest.raises(ProtobufError):  # the declared length runs past the whole message: malformed, not cut
        list(iter_fields(pb(2, "x" * 100)[:20], total=50))
    with pytest.raises(Truncated):
        read_varint(b"\x80", 0, 1)


# --------------------------------------------------------------------------------------------
# SavedModel / GraphDef
# --------------------------------------------------------------------------------------------

def test_savedmodel_identified_by_structure_and_ops_collected_exactly(tmp_path):
    p = write(tmp_path, HASH_NAME, saved_model(CLEAN_GRAPH))
    assert sniff(p) == "savedmodel"
    graph = parse_tf_graph(p.read_bytes())
    assert graph.kind == "SavedModel" and graph.meta_graphs == 1 and graph.functions == 1 and graph.nodes == 7
    # a node *named* ReadFile and an op that merely contains the name are not ReadFile ops
    assert graph.ops["ReadFileV9"] == 1 and "ReadFile" not in graph.ops
    findings = check_savedmodel(p)
    assert severities(findings) == {Severity.info}
    assert findings[0].evidence["ops"]["total"] == 7 and findings[0].evidence["nodes"] == 7


def test_saved_model_pb_that_looked_like_text(tmp_path):
    # Every byte below 0x80 with newlines: the old sniffer called such a file "text".
    data = saved_model(graph_def([node_def("a", "Const"), node_def("b", "Identity", "a")]))
    assert max(data) < 0x80 and b"\n" in data
    assert sniff(write(tmp_path, "saved_model.pb", data)) == "savedmodel"
    assert sniff_bytes(data) == "savedmodel"


@pytest.mark.parametrize("op, title", [("ReadFile", "TensorFlow graph reads or writes files"),
                                       ("WriteFile", "TensorFlow graph reads or writes files"),
                                       ("PyFunc", "TensorFlow graph calls back into Python"),
                                       ("EagerPyFunc", "TensorFlow graph calls back into Python")])
def test_savedmodel_dangerous_ops_in_function_library(tmp_path, op, title):
    graph = graph_def([node_def("x", "Placeholder"), node_def("call", "StatefulPartitionedCall", "x")],
                      [function_def("__inference_read_5", node_def("inner", op))])
    findings = check_savedmodel(write(tmp_path, "saved_model.pb", saved_model(graph)))
    assert titles(findings, Severity.high) == [title]
    assert findings[0].evidence["ops"] == {op: 1}


def test_frozen_graphdef(tmp_path):
    p = write(tmp_path, HASH_NAME, graph_def([node_def("p", "Placeholder"), node_def("r", "PyFuncStateless", "p")]))
    assert sniff(p) == "savedmodel"
    findings = check_savedmodel(p)
    assert titles(findings, Severity.high) == ["TensorFlow graph calls back into Python"]
    assert any(f.title.startswith("GraphDef:") for f in findings)


@pytest.mark.parametrize("data", [b"\x08\x01\x12\xff\xff\x03garbage", b"not a protobuf at all\n", b"\x0a\x05\x0a\x03abc"])
def test_pb_named_so_that_does_not_parse_is_high(tmp_path, data):
    p = write(tmp_path, "saved_model.pb", data)
    assert sniff(p) == "savedmodel"
    findings = check_savedmodel(p)
    assert titles(findings) == ["TensorFlow SavedModel: not inspected, treated as unsafe"]
    assert worst(findings) == Severity.high


def test_tf_graph_problems_for_archive_members():
    graph = saved_model(graph_def([node_def("r", "ReadFile")]))
    assert [p.title for p in tf_graph_problems(graph, "m/saved_model.pb")] == ["TensorFlow graph reads or writes files"]
    assert tf_graph_problems(saved_model(CLEAN_GRAPH), "m/saved_model.pb") == []
    assert [(p.severity, p.title) for p in tf_graph_problems(b"\x12\x07garbage!", "m/saved_model.pb")] == [
        ("high", "TensorFlow graph could not be parsed")]
    assert tf_graph_problems(pb(1, 123) + pb(2, 456), "m/fingerprint.pb") == []  # TensorFlow's own non-graph file


# --------------------------------------------------------------------------------------------
# ONNX by structure
# --------------------------------------------------------------------------------------------

def onnx_with_external_data(location: str, producer: str = "acme-exporter"):
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0] * 4)
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weight])
    model = helper.make_model(graph, producer_name=producer, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


def test_onnx_from_another_producer_with_escaping_external_data(tmp_path):
    from worker.inspect.onnx import check_onnx

    data = onnx_with_external_data("../../etc/passwd")
    assert b"onnx" not in data.lower()  # what the old sniffer looked for
    p = write(tmp_path, HASH_NAME, data)
    assert sniff(p) == "onnx" and sniff_bytes(data) == "onnx"
    findings = structure_check(sniff(p))(p)
    assert findings == check_onnx(p)
    assert titles(findings, Severity.critical) == ["ONNX external data escapes the model folder"]


def test_onnx_lookalikes_are_not_onnx(tmp_path):
    # starts like a ModelProto and says "onnx", but is no protobuf: the old sniffer called it onnx
    assert sniff(write(tmp_path, HASH_NAME, b"\x08\x07 onnx model, honest\n" + b"\xff" * 64)) != "onnx"
    # a well-formed ModelProto prefix without a graph is not identified by content...
    no_graph = pb(1, 8) + pb(2, "exporter")
    assert sniff(write(tmp_path, HASH_NAME, no_graph)) != "onnx"
    # ...but named .onnx it is, so the ONNX check reports it
    p = write(tmp_path, "model.onnx", no_graph)
    assert sniff(p) == "onnx"
    assert worst(structure_check("onnx")(p)) == Severity.high


# --------------------------------------------------------------------------------------------
# safetensors: a broken header of a file named .safetensors stays safetensors
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("data, title", [
    (b"\xff" * 8 + b'{"w": 1}', "safetensors header length is invalid"),            # absurd length
    (struct.pack("<Q", 12) + b"a,b,c\n1,2,3" + b"\0", "safetensors header is not valid UTF-8 JSON"),  # looked like csv
    (struct.pack("<Q", 7) + b'"a": 1}', "safetensors header is not valid UTF-8 JSON"),  # not an object opening
])
def test_malformed_safetensors_named_so(tmp_path, data, title):
    p = write(tmp_path, "model.safetensors", data)
    assert sniff(p) == "safetensors"
    assert sniff(p, filename="model.safetensors") == "safetensors"
    assert titles(check_safetensors(p), Severity.high) == [title]


def test_safetensors_whose_header_length_mimics_lzma(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    header = header.ljust(0x5D)  # 93 = 0x5d: the first bytes read 5d 00 00, lzma's magic
    p = write(tmp_path, HASH_NAME, struct.pack("<Q", len(header)) + header + b"\0" * 4)
    assert sniff(p) == "safetensors"


def test_content_beats_the_name(tmp_path):
    import pickle

    assert sniff(write(tmp_path, "x.safetensors", pickle.dumps([1, 2]))) == "pickle"
    assert sniff(write(tmp_path, "x.gguf", b"GGUF" + b"\0" * 32), filename="x.onnx") == "gguf"
    assert sniff(write(tmp_path, "a.csv", b"a,b\n1,2\n")) == "csv"
    assert sniff(write(tmp_path, HASH_NAME, b"a,b\n1,2\n"), filename="d.safetensors") == "safetensors"


def test_names_and_kinds():
    assert kind_from_name("repo/tokenizer_config.json") == "hf_json"
    assert kind_from_name("Chat_Template.JINJA") == "jinja"
    assert kind_from_name("saved_model.pb") == "savedmodel" and kind_from_name("fingerprint.pb") is None
    assert kind_from_name("data.json") is None and kind_from_name(None) is None
    assert {"savedmodel", "jinja", "yaml", "hf_json", "gguf"} <= MODEL_KINDS
    assert extension_matches("tokenizer_config.json", "hf_json") and extension_matches("model.pb", "savedmodel")
    assert extension_matches("x.yml", "yaml") and not extension_matches("x.yml", "jinja")
    for kind in ("savedmodel", "gguf", "jinja", "hf_json", "yaml", "onnx", "safetensors"):
        assert callable(structure_check(kind))
    assert structure_check("text") is None


# --------------------------------------------------------------------------------------------
# Jinja chat templates
# --------------------------------------------------------------------------------------------

LLAMA3 = """{{- bos_token }}
{%- if custom_tools is defined %}{%- set tools = custom_tools %}{%- endif %}
{%- if not date_string is defined %}{%- set date_string = strftime_now("%d %b %Y") %}{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none %}
    {%- for t in tools %}{{- t | tojson(indent=4) }}{{- "\\n\\n" }}{%- endfor %}
{%- endif %}
{{- system_message }}{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}
"""
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
           "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
           "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
           "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
           "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")
GEMMA = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
         "{% for message in messages %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
         "{% else %}{% set role = message['role'] %}{% endif %}"
         "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
         "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}")
QWEN_TOOLS = """{%- set ns = namespace(last_user=0, multi_step_tool=true) %}
{%- for message in messages %}{%- if message.role == 'user' %}{%- set ns.last_user = loop.index0 %}{%- endif %}{%- endfor %}
{%- macro render(content) %}{%- if content is string %}{{- content.strip() }}{%- else %}
{%- for part in content %}{%- if part.type == 'text' %}{{- part.text }}{%- endif %}{%- endfor %}{%- endif %}{%- endmacro %}
{%- if tools %}{{- '<tools>' }}{%- for tool in tools %}{{- '\\n' + tool | tojson }}{%- endfor %}{{- '\\n</tools>' }}{%- endif %}
{%- for message in messages %}
  {%- if message.role == 'assistant' %}
    {{- '<|im_start|>assistant\\n' }}{% generation %}{{- render(message.content) }}
    {%- for tool_call in message.tool_calls | default([]) %}{{- '<tool_call>\\n' + tool_call.function | tojson + '\\n</tool_call>' }}{%- endfor %}
    {{- '<|im_end|>\\n' }}{% endgeneration %}
  {%- else %}{{- '<|im_start|>' + message.role + '\\n' + render(message.content) + '<|im_end|>\\n' }}{%- endif %}
  {%- if loop.index0 > 10000 %}{% break %}{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"""

LLAMA31_TOOLS = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\\n\\n"}}
{%- endif %}
{%- if tools_in_user_message and not tools is none %}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}{{- ", " }}{%- endif %}
            {%- endfor %}
            {{- ")" }}
        {%- else %}
            {{- '{"name": "' + tool_call.name + '", "parameters": ' }}{{- tool_call.arguments | tojson }}{{- "}" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}
"""

BENIGN_TEMPLATES = {"llama31_tools": LLAMA31_TOOLS, "llama3": LLAMA3, "chatml": CHATML, "mistral": MISTRAL, "gemma": GEMMA, "qwen_tools": QWEN_TOOLS}

MALICIOUS_TEMPLATES = {
    # CVE-2024-34359 (llama-cpp-python) proof of concept
    "cve_2024_34359": ("{% for x in ().__class__.__base__.__subclasses__() %}{% if \"warning\" in x.__name__ %}"
                       "{{x()._module.__builtins__['__import__']('os').popen(\"touch /tmp/retr0reg\")}}{%endif%}{% endfor %}"),
    "self_globals": "{{ self.__init__.__globals__.__builtins__.__import__('os').popen('id').read() }}",
    "cycler_os": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "lipsum_item": "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "joiner_eval": "{{ joiner.__init__.__globals__['__builtins__']['eval'](\"__import__('os').system('id')\") }}",
    "namespace_init": "{{ namespace.__init__.__globals__.os.system('id') }}",
    "request_application": "{{ request.application.__globals__.__builtins__.__import__('os').popen('id').read() }}",
    "attr_hex_escapes": "{{ ()|attr('\\x5f\\x5fclass\\x5f\\x5f')|attr('\\x5f\\x5fbase\\x5f\\x5f')|attr('\\x5f\\x5fsubclasses\\x5f\\x5f')() }}",
    "concat_in_set": "{% set a = '__cla' ~ 'ss__' %}{{ ''|attr(a) }}",
    "underscore_var": "{% set u = '_' %}{% set n = u ~ u ~ 'globals' ~ u ~ u %}{{ lipsum|attr(n) }}",
    "join_list": "{{ ()|attr(['_', '_', 'class', '_', '_']|join) }}",
    "format_chars": "{{ ()|attr('%c%cclass%c%c'|format(95, 95, 95, 95)) }}",
    "plus_and_multiply": "{{ ()[('_' * 2) + 'class' + ('_' * 2)] }}",
    "repr_characters": "{% set u = (()|select|string|list).pop(24) %}{{ ()|attr(u ~ u ~ 'class' ~ u ~ u) }}",
    "dict_keyword": "{{ ()|attr(dict(__class__=1)|first) }}",
    "format_lookup": "{{ '{0.__class__.__mro__}'.format(messages) }}",
    "config_leak": "{{ config.items() }}",
}


@pytest.mark.parametrize("name", sorted(BENIGN_TEMPLATES))
def test_benign_chat_templates_are_clean(name):
    findings = check_jinja_template(BENIGN_TEMPLATES[name], name)
    assert [(f.severity, f.title) for f in findings] == [(Severity.info, "Chat template parsed: no sandbox-escape constructs")]


@pytest.mark.parametrize("name", sorted(MALICIOUS_TEMPLATES))
def test_malicious_chat_templates_are_critical(name):
    findings = check_jinja_template(MALICIOUS_TEMPLATES[name], name)
    assert worst(findings) == Severity.critical, [f.evidence for f in findings]
    assert "Chat template escapes the Jinja sandbox (server-side template injection)" in titles(findings)
    assert Severity.info not in severities(findings)


@pytest.mark.parametrize("template, construct", [
    ("{% include 'secrets.txt' %}", "include"),
    ("{% for i in range(10000000000) %}{% endfor %}", "huge range"),
    ("{{ lipsum() }}", "template global"),
    ("{{ (messages|string)[3] }}", "character extraction"),
])
def test_constructs_no_chat_template_needs_are_high(template, construct):
    findings = check_jinja_template(template, "t")
    assert worst(findings) == Severity.high
    assert construct in [i["construct"] for i in findings[0].evidence["issues"]["items"]]


@pytest.mark.parametrize("template", ["{% for x in messages %}{{ x }", "{% if %}", "{{ a |}}", "{{" + "(" * 5000 + "1" + ")" * 5000 + "}}", 42])
def test_template_that_does_not_parse_is_high(template):
    findings = check_jinja_template(template, "t")
    assert titles(findings) == ["Chat template: not inspected, treated as unsafe"]


def test_arithmetic_subscripts_are_fine():
    template = "{% for m in messages %}{% if not loop.last and messages[loop.index0 + 1]['role'] == m['role'] %}x{% endif %}{{ roles[loop.index0 % 2] }}{% endfor %}"
    assert severities(check_jinja_template(template, "t")) == {Severity.info}


def test_template_names_from_the_template_itself_are_not_gadgets():
    assert severities(check_jinja_template("{% set config = {'a': 1} %}{{ config.a }}", "t")) == {Severity.info}


def test_csv_stays_csv_and_text_with_template_tags_is_jinja(tmp_path):
    assert sniff(write(tmp_path, HASH_NAME, "text,label\n{{ greeting }} friend,1\n")) == "csv"  # a dataset
    assert sniff(write(tmp_path, HASH_NAME, "Hello {{ name }}\n")) == "jinja"
    assert sniff(write(tmp_path, HASH_NAME, "Plain notes, nothing to render\n")) == "csv"
    assert sniff(write(tmp_path, HASH_NAME, "Plain notes\n")) == "text"


def test_jinja_file_identified_by_content_and_name(tmp_path):
    p = write(tmp_path, HASH_NAME, MALICIOUS_TEMPLATES["cycler_os"])
    assert sniff(p) == "jinja"
    assert worst(check_jinja_file(p)) == Severity.critical
    assert sniff(write(tmp_path, "chat_template.jinja", "Hello, plain text")) == "jinja"
    assert severities(structure_check("jinja")(write(tmp_path, "t.jinja", GEMMA))) == {Severity.info}
    assert worst(check_jinja_file(write(tmp_path, "bad.jinja", b"\xff\xfe{{ x }}"))) == Severity.high


# --------------------------------------------------------------------------------------------
# Hugging Face JSON: tokenizer_config.json, chat_template.json, config.json
# --------------------------------------------------------------------------------------------

def tokenizer_config(**extra):
    config = {"added_tokens_decoder": {str(i): {"content": f"<tok{i}>", "special": True} for i in range(300)},
              "bos_token": "<s>", "eos_token": "</s>", "model_max_length": 8192, "tokenizer_class": "LlamaTokenizerFast"}
    return json.dumps(config | extra, indent=2)


def test_tokenizer_config_benign(tmp_path):
    p = write(tmp_path, "tokenizer_config.json", tokenizer_config(chat_template=LLAMA3))
    assert sniff(p) == "hf_json" and sniff(p, HASH_NAME) == "hf_json"  # the key sits far past the head: found in the tail
    findings = check_hf_json(p)
    assert severities(findings) == {Severity.info}
    assert titles(findings)[-1] == "Hugging Face JSON config: 1 chat template(s) checked"


def test_tokenizer_config_named_templates_one_malicious(tmp_path):
    templates = [{"name": "default", "template": CHATML}, {"name": "tool_use", "template": MALICIOUS_TEMPLATES["joiner_eval"]}]
    findings = check_hf_json(write(tmp_path, "tokenizer_config.json", tokenizer_config(chat_template=templates)))
    critical = [f for f in findings if f.severity == Severity.critical]
    assert len(critical) == 1 and critical[0].evidence["location"] == "tokenizer_config.json:chat_template[tool_use]"


def test_chat_template_json(tmp_path):
    p = write(tmp_path, "chat_template.json", json.dumps({"chat_template": MALICIOUS_TEMPLATES["format_chars"]}))
    assert sniff(p) == "hf_json"
    assert worst(structure_check("hf_json")(p)) == Severity.critical


def test_auto_map_is_custom_code(tmp_path):
    config = {"architectures": ["EvilForCausalLM"], "model_type": "evil",
              "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "other/repo--modeling_evil.Evil"}}
    p = write(tmp_path, "config.json", json.dumps(config))
    assert sniff(p) == "hf_json"
    findings = check_hf_json(p)
    assert titles(findings, Severity.high) == ["Config loads custom Python code (trust_remote_code)"]
    assert findings[0].evidence["other_repositories"]
    # by content too, under a hash name
    assert sniff(write(tmp_path, HASH_NAME, json.dumps(config))) == "hf_json"
    assert sniff(write(tmp_path, "plain", json.dumps({"a": 1}))) == "json"


@pytest.mark.parametrize("text, title", [
    ('{"chat_template": "{{ x }}", "bos_token": ', "Hugging Face JSON config: not inspected, treated as unsafe"),
    ('{"chat_template": "ok", "chat_template": "{{ cycler.__init__ }}"}', "Config repeats security-relevant keys"),
    ('{"chat_template": NaN}', "Hugging Face JSON config: not inspected, treated as unsafe"),
    ('{"chat_template": 5}', "Chat template: not inspected, treated as unsafe"),
])
def test_hf_json_problems_are_high(tmp_path, text, title):
    p = write(tmp_path, "tokenizer_config.json", text)
    assert sniff(p) == "hf_json"
    findings = check_hf_json(p)
    assert title in titles(findings) and worst(findings).rank >= Severity.high.rank


# --------------------------------------------------------------------------------------------
# GGUF
# --------------------------------------------------------------------------------------------

def gguf_str(s) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


def kv(key, vtype, payload) -> bytes:
    return gguf_str(key) + struct.pack("<I", vtype) + payload


def tensor_info(name, dims, ggml_type=0, offset=0) -> bytes:
    return gguf_str(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", ggml_type, offset)


def gguf(kvs, tensors=(), version=3, tensor_count=None, kv_count=None, data=b"\0" * 64) -> bytes:
    header = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if tensor_count is None else tensor_count,
                                   len(kvs) if kv_count is None else kv_count)
    body = header + b"".join(kvs) + b"".join(tensors)
    return body + b"\0" * (-len(body) % 32) + data


def standard_kvs(template=CHATML):
    tokens = struct.pack("<IQ", 8, 3) + gguf_str("<s>") + gguf_str("</s>") + gguf_str("hello")
    nested = struct.pack("<IQ", 9, 2) + struct.pack("<IQ", 4, 2) + struct.pack("<II", 1, 2) + struct.pack("<IQ", 4, 1) + struct.pack("<I", 3)
    return [kv("general.architecture", 8, gguf_str("llama")), kv("general.name", 8, gguf_str("tiny")),
            kv("llama.context_length", 4, struct.pack("<I", 2048)), kv("llama.rope.freq_base", 6, struct.pack("<f", 1e4)),
            kv("general.file_type", 10, struct.pack("<Q", 1)), kv("tokenizer.ggml.add_bos_token", 7, b"\x01"),
            kv("tokenizer.ggml.tokens", 9, tokens), kv("test.nested", 9, nested),
            kv("tokenizer.chat_template", 8, gguf_str(template))]


def test_gguf_clean(tmp_path):
    p = write(tmp_path, HASH_NAME, gguf(standard_kvs(), [tensor_info("tok_embd.weight", [4, 4], 0, 0)]))
    assert sniff(p) == "gguf"
    findings = structure_check("gguf")(p)
    assert severities(findings) == {Severity.info}
    summary = findings[-1]
    assert summary.evidence["architecture"] == "llama" and summary.evidence["tensor_count"] == 1
    assert summary.evidence["chat_templates"] == ["tokenizer.chat_template"]


def test_gguf_big_endian(tmp_path):
    data = b"GGUF" + struct.pack(">IQQ", 3, 0, 1) + struct.pack(">Q", 20) + b"general.architecture" + struct.pack(">IQ", 8, 4) + b"phi3"
    findings = check_gguf(write(tmp_path, "m.gguf", data))
    assert severities(findings) == {Severity.info} and findings[-1].evidence["byte_order"] == "big"


def test_gguf_malicious_chat_template(tmp_path):
    findings = check_gguf(write(tmp_path, "m.gguf", gguf(standard_kvs(MALICIOUS_TEMPLATES["cve_2024_34359"]))))
    assert worst(findings) == Severity.critical
    assert findings[0].evidence["location"] == "m.gguf:tokenizer.chat_template"


def test_gguf_named_chat_templates_are_checked(tmp_path):
    kvs = standard_kvs() + [kv("tokenizer.chat_template.tool_use", 8, gguf_str(MALICIOUS_TEMPLATES["self_globals"]))]
    assert worst(check_gguf(write(tmp_path, "m.gguf", gguf(kvs)))) == Severity.critical


@pytest.mark.parametrize("data", [
    gguf([], kv_count=2**40),                                                     # metadata count
    gguf([], tensor_count=2**50),                                                 # tensor count
    gguf([struct.pack("<Q", 2**40) + b"k"]),                                      # key length
    gguf([kv("general.name", 8, struct.pack("<Q", 2**60) + b"x")]),                 # string length
    gguf([kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 2**58))]),            # string array count
    gguf([kv("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 2**40))]),            # float array count
    gguf([], [tensor_info("w", [2], 0, 2**40)]),                                  # tensor offset
    gguf([], [tensor_info("w", [4], 0, 0), tensor_info("v", [4], 0, 96)]),        # offset past the data section
])
def test_gguf_counts_exceeding_the_file_are_high(tmp_path, data):
    findings = check_gguf(write(tmp_path, "m.gguf", data))
    assert titles(findings) == ["GGUF header counts exceed the file"] and worst(findings) == Severity.high


@pytest.mark.parametrize("data", [
    b"GGUF\x03\x00",                                                              # truncated header
    gguf(standard_kvs())[:120],                                                   # cut inside the metadata
    gguf([], version=1),                                                          # unsupported version
    gguf([], version=99),
    gguf([kv("x", 77, b"\0" * 8)]),                                               # unknown value type
    gguf([gguf_str(b"\xff\xfe") + struct.pack("<I", 4) + b"\0" * 4]),              # key not UTF-8
    gguf([], [tensor_info("w", [1, 1, 1, 1, 1])]),                                # too many dimensions
    gguf([kv("deep", 9, struct.pack("<IQ", 9, 1) * 12 + struct.pack("<IQ", 4, 0))]),  # arrays nested too deep
    gguf([kv("general.alignment", 4, struct.pack("<I", 3))]),                     # alignment not a power of 2
    b"GGUX" + b"\0" * 40,                                                         # named .gguf, wrong magic
])
def test_gguf_malformed_is_high(tmp_path, data):
    p = write(tmp_path, "m.gguf", data)
    assert sniff(p) == "gguf"
    findings = check_gguf(p)
    assert titles(findings) in (["GGUF model: not inspected, treated as unsafe"], ["GGUF header counts exceed the file"])
    assert worst(findings) == Severity.high


def test_gguf_duplicate_keys_are_high(tmp_path):
    kvs = [kv("general.architecture", 8, gguf_str("llama")), kv("general.architecture", 8, gguf_str("gpt2"))]
    assert titles(check_gguf(write(tmp_path, "m.gguf", gguf(kvs))), Severity.high) == ["GGUF metadata repeats keys"]


# --------------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "model: resnet\ncallback: !!python/object/apply:os.system [\"id\"]\n",
    "x: !<tag:yaml.org,2002:python/object/new:subprocess.Popen> [[\"id\"]]\n",
    "%TAG !p! tag:yaml.org,2002:python/\n---\nx: !p!object/apply:os.system [id]\n",
    "x: !!python/name:os.system\n",
    "- !!python/module:subprocess\n",
    "x: !!python%2Fobject/apply:os.system [id]\n",
    "a:\n  b:\n    - !!python/object:__main__.Evil {cmd: id}\n",
])
def test_yaml_python_tags_are_critical(tmp_path, text):
    p = write(tmp_path, HASH_NAME, text)
    assert sniff(p) == "yaml"
    findings = check_yaml(p)
    assert titles(findings, Severity.critical) == ["YAML uses python/* tags (code execution on load)"]


def test_yaml_clean_and_tag_text_in_strings(tmp_path):
    p = write(tmp_path, "config.yaml", "model:\n  name: llama\n  layers: 32\nnote: \"!!python/object is text here\"\nlist: [1, 2]\n")
    assert sniff(p) == "yaml" and sniff(p, "config.yaml") == "yaml"
    assert titles(check_yaml(p)) == ["YAML parsed: no python/* tags"]


def test_yaml_that_does_not_parse_is_high(tmp_path):
    p = write(tmp_path, "config.yml", "key: [unclosed\n  - other: {\n")
    assert sniff(p) == "yaml"
    assert titles(structure_check("yaml")(p)) == ["YAML file: not inspected, treated as unsafe"]


def test_yaml_alias_bomb(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    findings = check_yaml(write(tmp_path, "bomb.yaml", "\n".join(lines) + "\n"))
    assert titles(findings, Severity.high) == ["YAML alias bomb"]
