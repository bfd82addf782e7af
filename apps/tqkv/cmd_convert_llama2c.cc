// tqkv convert-llama2c MODEL.bin TOKENIZER.bin OUT.gguf
#include <cstdio>
#include <memory>

#include "command.h"
#include "tqkv/model.h"

namespace tqkv::cli {
namespace {

struct Opts {
  std::string model, tokenizer, out;
};

Register reg("convert-llama2c", "Convert a llama2.c checkpoint + tokenizer.bin to GGUF llama",
             [](CLI::App& app) {
               auto o = std::make_shared<Opts>();
               app.add_option("model", o->model, "llama2.c checkpoint (legacy format)")->required();
               app.add_option("tokenizer", o->tokenizer, "llama2.c tokenizer.bin")->required();
               app.add_option("out", o->out, "output GGUF file")->required();
               return [o]() -> Status {
                 TQKV_RETURN_IF_ERROR(convert_llama2c(o->model, o->tokenizer, o->out));
                 // Load it back: the converter's output must pass the reader's validation.
                 TQKV_ASSIGN_OR_RETURN(auto m, Model::load(o->out));
                 const ModelConfig& c = m->config();
                 std::fprintf(stderr, "wrote %s: llama, dim %d, %d layers, %d/%d heads, vocab %d, ctx %d\n",
                              o->out.c_str(), c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
                              c.context_length);
                 return Status::Ok();
               };
             });

}  // namespace
}  // namespace tqkv::cli
