"""TheEye's "ApiTest" boilerplate: a response object (201, TheEyeJobId header) with state.

Prints the nested form ``{"state","response":{"body","statusCode","headers"}}``; with the
first argument ``flat`` it prints the flat form ``{"state","body","statusCode","headers"}``.
"""

import json
import os
import sys

BODY = {
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


def main() -> None:
    job_id = json.loads(os.environ.get("THEEYE_JOB", "{}")).get("id", "")
    headers = {"TheEyeJobId": job_id}
    if len(sys.argv) > 1 and sys.argv[1] == "flat":
        out = {"state": "success", "body": BODY, "statusCode": 201, "headers": headers}
    else:
        response = {"body": BODY, "statusCode": 201, "headers": headers}
        out = {"state": "success", "response": response}
    print(json.dumps(out, separators=(",", ":"), ensure_ascii=False))


if __name__ == "__main__":
    main()
