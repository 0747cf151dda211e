"""What the seeds' examples answer, written out once for every test that checks them.

``REGIMEN`` is also in the emulator's ``recipes/scripts/api_test.py``, which must stay a
standalone script (it runs as a subprocess); this is the tests' own, independent copy.
"""

from __future__ import annotations

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"  # a JavaScript Date as JSON writes it
# "Rest API Response" with 100: patterns (the date changes), with 200: the exact bytes.
SEED_SUCCESS_PARSE = rb'\{"name":"tomer","date":"' + ISO.encode() + rb'"\}'
SEED_SUCCESS_OUTPUT = rb'\["\{\\"name\\":\\"tomer\\",\\"date\\":\\"' + ISO.encode() + rb'\\"\}"\]'
SEED_FAILURE_PARSE = (
    b'{"message":"Validation Error. Invalid Argument Value","statusCode":418,'
    b'"name":"ClientError","code":"","status":418}'
)
SEED_FAILURE_OUTPUT = (
    b'["{\\"message\\":\\"Validation Error. Invalid Argument Value\\",\\"statusCode\\":418,'
    b'\\"name\\":\\"ClientError\\",\\"code\\":\\"\\",\\"status\\":418}"]'
)
REGIMEN = {
    "regimen_id": "operaciones_cambio_apartado_a",
    "regla_fecha_vencimiento": "byLabourDay",
    "fecha": "2023-01-02T00:00:00.000Z",
    "status": "por_vencer",
    "periodo_origen": "01-01-2023",
    "periodo_www3": "20230101",
    "prorroga": False,
    "createdAt": "2023-10-02T19:53:40.998Z",
    "updatedAt": "2023-10-02T19:53:40.998Z",
    "id": "651b1fc444587926e420dc37",
    "area": "Securities",
    "nro_en_www3": "14_1",
    "nombre_en_w3": "OPERACIONES DE CAMBIO",
    "tipo_de_regimen": "Obligatorio",
    "regimen": "Operaciones de Cambio (R.I. - O.C.) - Apartado A ",
}
